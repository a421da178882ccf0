"""SIP-URI dials: what the carrier checks of a call placed to ``sip:<number>@<trunk>`` (as
Twilio's SIP interface places them) and the trunk's final SIP response.

A dial's ``To`` is ``sip:<user>@<host[:port]>[;param=value...][?X-Header=value&...]``. The
carrier parses it, checks it against the trunk configured at its address
(``SandboxConfig.sip_trunks``: credentials, transport), and records what reached it on the
call (``sip``: the URI, number, address, transport, ``secure``, headers, the username
presented and whether the credentials were right), so tests can assert on every dial. The
trunk's answer: 404 for an address no trunk has, 407 without credentials a trunk wants, 403
with wrong ones, 503 over a transport it does not listen on; otherwise the number's rule's
``sip_response``, or the response its outcome implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

SCHEMES = ("sip:", "sips:")
# The final SIP response a call with each outcome ends with, unless its rule names one.
RESPONSE_OF_OUTCOME = {
    "completed": 200,
    "voicemail": 200,
    "busy": 486,
    "no-answer": 487,  # Twilio cancels the INVITE when the ring timeout passes
    "failed": 500,
}
BUSY = frozenset({486, 600, 603})
NO_ANSWER = frozenset({408, 480, 487})


@dataclass(frozen=True)
class SipUri:
    """A SIP URI as a dial's ``To`` carries it."""

    uri: str
    user: str
    address: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter; ``auto`` when absent (Twilio then picks UDP)."""
        return self.params.get("transport", "auto")


def is_sip(to: str) -> bool:
    """Whether a dial's ``To`` is a SIP URI."""
    return to.startswith(SCHEMES)


def parse(to: str) -> SipUri | None:
    """The URI's parts; None when it is no ``sip:user@host`` URI."""
    if not is_sip(to):
        return None
    rest = to.split(":", 1)[1]
    rest, _, header_part = rest.partition("?")
    target, *param_parts = rest.split(";")
    user, at, address = target.partition("@")
    if not at or not user or not address:
        return None
    params = {}
    for part in param_parts:
        name, _, value = part.partition("=")
        params[name.lower()] = value
    headers = dict(parse_qsl(header_part, keep_blank_values=True))
    return SipUri(to, user, address, params, headers)


def dialed_number(to: str) -> str:
    """The number a dial is for: its ``To``, or a SIP URI's user part (rules match on it)."""
    uri = parse(to)
    return uri.user if uri is not None else to


def check(
    uri: SipUri, trunks: dict[str, dict[str, str]], form: dict[str, str]
) -> tuple[int | None, dict[str, Any]]:
    """The trunk's refusal of the dial (a SIP code), or None when it takes it; and the record
    of what reached it."""
    username = form.get("SipAuthUsername", "")
    password = form.get("SipAuthPassword", "")
    trunk = trunks.get(uri.address)
    record: dict[str, Any] = {
        "uri": uri.uri,
        "number": uri.user,
        "address": uri.address,
        "transport": uri.transport,
        "secure": uri.params.get("secure") == "true",
        "headers": uri.headers,
        "username": username or None,
        "auth": "none",
    }
    if trunk is None:
        return 404, record
    if trunk.get("username"):
        if not username:
            record["auth"] = "missing"
            return 407, record
        if (username, password) != (trunk["username"], trunk.get("password", "")):
            record["auth"] = "wrong"
            return 403, record
        record["auth"] = "ok"
    expected = trunk.get("transport")
    if expected and expected != uri.transport:
        return 503, record
    return None, record


def outcome_of(code: int) -> str:
    """The call's end (Twilio's word) for the trunk's final SIP response."""
    if code < 300:
        return "completed"
    if code in BUSY:
        return "busy"
    if code in NO_ANSWER:
        return "no-answer"
    return "failed"
