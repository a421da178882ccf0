"""Twilio's call statuses and detection verdicts in our terms: the adapter's one mapping table.

| Twilio ``CallStatus`` | our status    | outcome       |
|-----------------------|---------------|---------------|
| queued                | dispatched    |               |
| initiated, ringing    | initiated     |               |
| in-progress           | in_progress   |               |
| completed             | completed     | answered      |
| completed + machine   | voicemail     | voicemail     |
| busy                  | failed        | busy          |
| no-answer             | failed        | no_answer     |
| failed                | failed        | call_failed   |
| canceled              | cancelled     | canceled      |

"completed + machine": ``AnsweredBy`` is a ``machine_*`` verdict. Any other status is unknown
(``from_twilio`` returns None).
"""

from __future__ import annotations

from typing import Any

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus
from shared.telephony.call_progress import SHARED_STATUSES, StatusTable, progress_update
from shared.voicemail import is_machine

# Twilio CallStatus → (our status, outcome when final): the shared words and ``initiated``.
TWILIO_STATUSES: StatusTable = {
    **SHARED_STATUSES,
    "initiated": (CallStatus.INITIATED, None),
}

# Reports that never tell more than another report of the same call: a call that rings was
# initiated, and both map to `initiated`. The API acknowledges them without queueing work.
REDUNDANT_TWILIO_STATUSES = frozenset({"ringing"})

# Twilio's AnsweredBy values that are not a machine, in our words (``port.AnsweredBy``); a
# ``machine_*`` value is kept as it is (its detail: the greeting's start, or its end).
_NOT_MACHINE = {"human": "human", "fax": "fax", "unknown": "unknown"}


def answered_by(value: str | None) -> str | None:
    """Twilio's ``AnsweredBy`` as we record it (``port.DetectionVerdict``); None if absent."""
    if not value:
        return None
    if is_machine(value):
        return value
    return _NOT_MACHINE.get(value, "unknown")


def from_twilio(
    sid: str,
    call_status: str,
    *,
    answered_by: str | None = None,
    duration: str | int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    from_number: str | None = None,
) -> ProviderUpdate | None:
    """Map a Twilio call status (callback or REST resource) onto our states; None if unknown."""
    return progress_update(
        TWILIO_STATUSES,
        sid,
        call_status,
        machine=is_machine(answered_by),
        duration=duration,
        error_code=error_code,
        error_message=error_message,
        from_number=from_number,
        answered_by=answered_by,
    )


def from_twilio_report(report: dict[str, Any]) -> ProviderUpdate | None:
    """A status report in the Twilio-shaped form the API queued before the provider port
    (``sid``, ``status`` in Twilio's words, ``answered_by``, ``duration``, ``error_code``,
    ``error_message``, ``from``), in our terms: such reports may still wait in the status inbox
    during a deploy (``shared.telephony.reports``)."""
    return from_twilio(
        report["sid"],
        report["status"],
        answered_by=report.get("answered_by"),
        duration=report.get("duration"),
        error_code=report.get("error_code"),
        error_message=report.get("error_message"),
        from_number=report.get("from"),
    )


def from_resource(call: Any) -> ProviderUpdate | None:
    """A call resource as the SDK returns it (a read, or an update), in our terms."""
    return from_twilio(
        str(call.sid), str(call.status), answered_by=call.answered_by, duration=call.duration
    )
