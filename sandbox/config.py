"""How the sandbox carrier behaves: per-number rules, seeded outcomes, callback faults."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

OUTCOMES = ("completed", "busy", "no-answer", "failed", "voicemail")


@dataclass
class Rule:
    """Behaviour for the numbers matching ``pattern`` (fnmatch glob, or ``re:`` + regex)."""

    pattern: str = "*"
    outcome: str | dict[str, float] | None = None
    # The n-th call to a number gets the n-th outcome (the last one repeats); wins over outcome.
    outcome_sequence: list[str] | None = None
    ring_seconds: float | None = None
    talk_seconds: float | None = None
    api_latency_ms: float | None = None
    http_error: int | None = None
    http_error_probability: float = 1.0
    timeout_seconds: float | None = None
    error_code: int | None = None
    error_message: str | None = None
    # The call plays out but no status callback is ever sent for it (a lost webhook).
    drop_callbacks: bool = False

    def matches(self, number: str) -> bool:
        """Whether this rule applies to a call to ``number``."""
        if self.pattern.startswith("re:"):
            return re.fullmatch(self.pattern[3:], number) is not None
        return fnmatch.fnmatchcase(number, self.pattern)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        """A rule from its JSON form; unknown keys are an error."""
        rule = cls(**data)
        named = [rule.outcome] if isinstance(rule.outcome, str) else list(rule.outcome or [])
        for outcome in named + list(rule.outcome_sequence or []):
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        return rule


@dataclass
class SandboxConfig:
    """The whole carrier's behaviour; every field has a harmless default."""

    rules: list[Rule] = field(default_factory=list)
    seed: int = 0
    accounts: dict[str, str] = field(
        default_factory=lambda: {SANDBOX_ACCOUNT_SID: SANDBOX_AUTH_TOKEN}
    )
    # Fetch the call's TwiML on answer, and the agent config it points to, like Twilio and a
    # voice-agent runtime would.
    fetch_twiml: bool = False
    duplicate_callbacks_probability: float = 0.0
    shuffle_callbacks: bool = False
    callback_retries: int = 1
    callback_timeout_s: float = 5.0
    default_ring_seconds: float = 0.05
    default_talk_seconds: float = 0.1
    # Which rule each number matched, as it is looked up several times per call.
    _matched: dict[str, Rule] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        """A config from its JSON form."""
        values = dict(data)
        values["rules"] = [Rule.from_dict(r) for r in values.get("rules", [])]
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str | Path) -> SandboxConfig:
        """A config read from a JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def rule_for(self, number: str) -> Rule:
        """The first matching rule, or the defaults (rules are not changed once configured)."""
        rule = self._matched.get(number)
        if rule is None:
            rule = next((rule for rule in self.rules if rule.matches(number)), Rule())
            self._matched[number] = rule
        return rule
