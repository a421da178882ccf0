"""Prompt tags: ``{{key}}`` and ``<<key>>`` placeholders filled from a recipient's variables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}|<<\s*([A-Za-z0-9_.\-]+)\s*>>")
# Variables the voice-agent runtime fills itself (the ElevenLabs convention); we leave them.
RUNTIME_PREFIX = "system__"


def placeholders(text: str) -> set[str]:
    """The keys ``text`` needs, runtime variables excluded."""
    keys = {m.group(1) or m.group(2) for m in PLACEHOLDER.finditer(text)}
    return {k for k in keys if not k.startswith(RUNTIME_PREFIX)}


def placeholders_in(values: Iterable[Any]) -> set[str]:
    """The keys needed by every string found (recursively) in ``values``."""
    needed: set[str] = set()
    for value in values:
        if isinstance(value, str):
            needed |= placeholders(value)
        elif isinstance(value, Mapping):
            needed |= placeholders_in(value.values())
        elif isinstance(value, list | tuple):
            needed |= placeholders_in(value)
    return needed


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text: str, variables: Mapping[str, Any]) -> str:
    """``text`` with every known placeholder replaced; unknown ones are left as they are."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1) or match.group(2)
        if key in variables:
            return _as_text(variables[key])
        return match.group(0)

    return PLACEHOLDER.sub(substitute, text)


def render_tree(value: Any, variables: Mapping[str, Any]) -> Any:
    """A copy of a JSON value with every string in it rendered."""
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, Mapping):
        return {k: render_tree(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, variables) for v in value]
    return value
