"""SIP final responses in our terms: the adapter's one mapping table.

Twilio's status callbacks of a SIP call carry the trunk's final answer as ``SipResponseCode``.
A code in this table decides the outcome; any other code leaves Twilio's ``CallStatus`` to
decide it (``shared/telephony/twilio/statuses.py``).

| SIP response                          | our status | outcome              |
|---------------------------------------|------------|----------------------|
| 486 Busy Here, 600 Busy Everywhere    | failed     | busy                 |
| 408 Request Timeout, 480 Unavailable  | failed     | no_answer            |
| 404 Not Found, 484 Address Incomplete | failed     | call_failed          |
| 403 Forbidden, 407 Proxy Auth Req.    | failed     | provider_auth_failed |

A mapped response is recorded as the recipient's ``error_code`` (``sip_486``) with a message
that says what happened (``invalid number: ...``). A 403 or 407 means the trunk refused our
credentials: the batch fails, as for a Twilio account whose credentials are refused.
"""

from __future__ import annotations

from dataclasses import replace

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome

# SIP code → (outcome, what the recipient's error message says).
SIP_RESPONSES: dict[int, tuple[Outcome, str]] = {
    486: (Outcome.BUSY, "busy (SIP 486 Busy Here)"),
    600: (Outcome.BUSY, "busy (SIP 600 Busy Everywhere)"),
    408: (Outcome.NO_ANSWER, "no answer (SIP 408 Request Timeout)"),
    480: (Outcome.NO_ANSWER, "no answer (SIP 480 Temporarily Unavailable)"),
    404: (Outcome.CALL_FAILED, "invalid number: the trunk does not know it (SIP 404 Not Found)"),
    484: (Outcome.CALL_FAILED, "invalid number: incomplete (SIP 484 Address Incomplete)"),
    403: (
        Outcome.PROVIDER_AUTH_FAILED,
        "the SIP trunk refused our credentials (SIP 403 Forbidden)",
    ),
    407: (
        Outcome.PROVIDER_AUTH_FAILED,
        "the SIP trunk refused our credentials (SIP 407 Proxy Authentication Required)",
    ),
}
# The error code a mapped response is recorded with (the recipient's error_code).
ERROR_CODE_PREFIX = "sip_"


def sip_code(value: str | None) -> int | None:
    """``SipResponseCode`` as a number; None when absent or not a number."""
    return int(value) if value and value.isdigit() else None


def with_sip_response(update: ProviderUpdate, code: int | None) -> ProviderUpdate:
    """The final update of a call that did not connect (Twilio's ``busy``, ``no-answer`` or
    ``failed``), as the trunk's final answer says; any other update, or a code not in the
    table, is left as Twilio's status made it."""
    mapped = SIP_RESPONSES.get(code) if code is not None else None
    if mapped is None or update.status != CallStatus.FAILED:
        return update
    outcome, reason = mapped
    return replace(
        update,
        status=CallStatus.FAILED,
        outcome=outcome,
        error_code=f"{ERROR_CODE_PREFIX}{code}",
        error_message=reason,
    )


def refused_credentials(update: ProviderUpdate) -> bool:
    """Whether the update says the trunk refused our credentials."""
    return update.outcome == Outcome.PROVIDER_AUTH_FAILED
