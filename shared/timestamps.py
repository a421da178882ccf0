"""Times as the API shows them: whole seconds since the Unix epoch."""

from __future__ import annotations

from datetime import datetime


def unix(value: datetime) -> int:
    """``value`` in whole seconds since the epoch."""
    return int(value.timestamp())


def unix_or_none(value: datetime | None) -> int | None:
    """``unix(value)``, or None for no time."""
    return unix(value) if value is not None else None
