"""How the sandbox carrier behaves: per-number rules, seeded outcomes, callback faults."""

from __future__ import annotations

import fnmatch
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_VOBIZ_AUTH_ID,
    SANDBOX_VOBIZ_AUTH_TOKEN,
)

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
    # How long asynchronous answering machine detection takes, from the answer to its verdict
    # (None: the config's default).
    amd_seconds: float | None = None
    # A SIP-URI dial to the number gets this final SIP response from its trunk (486 busy,
    # 480 no answer, 404, 403, ...), instead of the outcome above (``sandbox.sip``).
    sip_response: int | None = None

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
    # Account id → auth token: Twilio account SIDs and Vobiz auth ids alike.
    accounts: dict[str, str] = field(
        default_factory=lambda: {
            SANDBOX_ACCOUNT_SID: SANDBOX_AUTH_TOKEN,
            SANDBOX_VOBIZ_AUTH_ID: SANDBOX_VOBIZ_AUTH_TOKEN,
        }
    )
    # Fetch the call's TwiML on answer, and the agent config it points to, like Twilio and a
    # voice-agent runtime would.
    fetch_twiml: bool = False
    duplicate_callbacks_probability: float = 0.0
    shuffle_callbacks: bool = False
    # Socket timeout of the TwiML and agent-config fetches. Status callbacks are timed, and
    # resent, as their URL's connection overrides say (CallbackPolicy).
    callback_timeout_s: float = 5.0
    default_ring_seconds: float = 0.05
    default_talk_seconds: float = 0.1
    # Asynchronous answering machine detection's verdict comes this long after the answer.
    default_amd_seconds: float = 0.02
    # How long a <Say> of TwiML applied to a live call takes to speak, before what follows it.
    say_seconds: float = 0.2
    # The SIP trunks SIP-URI dials may reach, by address (host[:port]): what each expects,
    # ``{"username", "password", "transport"}`` (each optional). A dial to another address
    # gets a 404, one without the credentials a 407, with wrong ones a 403 (``sandbox.sip``).
    sip_trunks: dict[str, dict[str, str]] = field(default_factory=dict)
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


# What makes a callback's try fail, as Twilio's retry policy (``rp``) names them: no connection
# (refused, or not made within the connect timeout), no answer within the read timeout (or the
# connection broken before one), an answer of 4xx (any other non-2xx counts as one) or 5xx.
FAILURE_CONNECT = "ct"
FAILURE_READ = "rt"
FAILURE_4XX = "4xx"
FAILURE_5XX = "5xx"
FAILURES = frozenset({FAILURE_CONNECT, FAILURE_READ, FAILURE_4XX, FAILURE_5XX})
# The pause before the n-th resend: 0.5 s, 1 s, 2 s, 4 s..., shortened so that the resend
# starts at least MIN_TRY_S before the total time is up (else it is not made).
FIRST_RESEND_PAUSE_S = 0.5
MIN_TRY_S = 0.5


def _bounded(values: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    try:
        return min(max(int(values[name]), low), high)
    except (KeyError, ValueError):
        return default


@dataclass(frozen=True)
class CallbackPolicy:
    """How a callback is sent and resent: Twilio's defaults, or the connection overrides of its
    URL's fragment (``#ct=2000&rt=5000&tt=15000&rc=5&rp=all``). Values out of Twilio's range
    are brought into it; unknown or malformed ones leave the default."""

    connect_timeout_ms: int = 5000  # ct: 100-10000
    read_timeout_ms: int = 15000  # rt: 100-15000
    total_timeout_ms: int = 15000  # tt: 100-15000, every try together, from the first
    retries: int = 1  # rc: 0-5, resends after the first try
    retry_on: frozenset[str] = frozenset({FAILURE_CONNECT})  # rp

    @classmethod
    def from_fragment(cls, fragment: str) -> CallbackPolicy:
        """The policy a URL fragment (without its ``#``) asks for."""
        values = dict(urllib.parse.parse_qsl(fragment))
        default = cls()
        retry_on = default.retry_on
        if "rp" in values:
            named = {part.strip().lower() for part in values["rp"].split(",")}
            retry_on = FAILURES if "all" in named else frozenset(named & FAILURES) or retry_on
        return cls(
            connect_timeout_ms=_bounded(values, "ct", 100, 10000, default.connect_timeout_ms),
            read_timeout_ms=_bounded(values, "rt", 100, 15000, default.read_timeout_ms),
            total_timeout_ms=_bounded(values, "tt", 100, 15000, default.total_timeout_ms),
            retries=_bounded(values, "rc", 0, 5, default.retries),
            retry_on=retry_on,
        )

    @classmethod
    def of_url(cls, url: str) -> tuple[str, CallbackPolicy]:
        """The URL to post to (a fragment is never sent) and the policy its fragment asks for."""
        bare, fragment = urllib.parse.urldefrag(url)
        return bare, cls.from_fragment(fragment)

    def resends(self, failure: str, resend: int, elapsed_s: float) -> float | None:
        """The pause before the ``resend``-th resend (1, 2, ...) of a callback whose last try
        failed with ``failure``, ``elapsed_s`` after its first try began; None when it is
        given up: not a failure the policy retries, no resend left, or too little of the
        total time left for another try."""
        if failure not in self.retry_on or resend > self.retries:
            return None
        left = self.total_timeout_ms / 1000 - elapsed_s - MIN_TRY_S
        if left < 0:
            return None
        return min(FIRST_RESEND_PAUSE_S * 2 ** (resend - 1), left)
