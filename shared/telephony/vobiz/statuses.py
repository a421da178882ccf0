"""Vobiz's call statuses, hang-up causes and machine-detection results in our terms: the
adapter's one mapping table.

| Vobiz ``CallStatus`` (callbacks) / ``call_status`` (REST) | our status | outcome     |
|-----------------------------------------------------------|------------|-------------|
| queued                                                    | dispatched |             |
| ringing                                                   | initiated  |             |
| in-progress                                               | in_progress|             |
| completed                                                 | completed  | answered    |
| completed + ``Machine=true`` (a machine answered)         | voicemail  | voicemail   |
| busy                                                      | failed     | busy        |
| no-answer                                                 | failed     | no_answer   |
| failed, timeout                                           | failed     | call_failed |
| cancel, canceled                                          | cancelled  | canceled    |

``timeout`` is Vobiz's word for a call its carriers could not connect in time (not a ring
timeout, which is ``no-answer``). A final status that Vobiz reports as ``completed`` for a call
that was never answered is read from its hang-up cause instead: ``Busy Line`` (busy), ``No
Answer`` / ``Ring Timeout Reached`` (no_answer), ``Canceled`` (canceled), ``Rejected`` and any
other cause of a call never answered (call_failed). Any other status is unknown
(``from_vobiz`` returns None).
"""

from __future__ import annotations

from dataclasses import replace

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome
from shared.telephony.call_progress import SHARED_STATUSES, StatusTable, progress_update

# Vobiz's call status → (our status, outcome when final): the shared words, ``timeout`` and
# ``cancel``.
VOBIZ_STATUSES: StatusTable = {
    **SHARED_STATUSES,
    "timeout": (CallStatus.FAILED, Outcome.CALL_FAILED),
    "cancel": (CallStatus.CANCELLED, Outcome.CANCELED),
}

# Hang-up causes of a call that was never answered, for a final report that says only
# ``completed`` (lower-case cause names).
UNANSWERED_CAUSES: dict[str, tuple[CallStatus, Outcome]] = {
    "busy line": (CallStatus.FAILED, Outcome.BUSY),
    "no answer": (CallStatus.FAILED, Outcome.NO_ANSWER),
    "ring timeout reached": (CallStatus.FAILED, Outcome.NO_ANSWER),
    "canceled": (CallStatus.CANCELLED, Outcome.CANCELED),
    "cancelled": (CallStatus.CANCELLED, Outcome.CANCELED),
}


def was_answered(answer_time: object, duration: object) -> bool | None:
    """Whether a call was answered, as a hang-up report or a call record tells it: an answer
    time, or a duration above zero (None when it gives neither)."""
    if answer_time is None and duration is None:
        return None
    try:
        seconds = float(str(duration or 0))
    except ValueError:
        seconds = 0.0
    return bool(answer_time) or seconds > 0


def machine_verdict(value: str | None) -> str | None:
    """Vobiz's ``Machine`` field (``true`` / ``false``) in our words (``port.AnsweredBy``)."""
    if value is None or value == "":
        return None
    return "machine" if value.strip().lower() == "true" else "human"


def from_vobiz(
    sid: str,
    call_status: str,
    *,
    answered: bool | None = None,
    hangup_cause: str | None = None,
    answered_by: str | None = None,
    duration: str | int | None = None,
    from_number: str | None = None,
) -> ProviderUpdate | None:
    """Map a Vobiz call status (callback or REST object) onto our states; None if unknown.

    ``answered`` (False: the call was never answered, as the hang-up report's answer time or
    duration says) lets a final ``completed`` be read from its ``hangup_cause``."""
    update = progress_update(
        VOBIZ_STATUSES,
        sid,
        call_status,
        machine=answered_by == "machine" and answered is not False,
        duration=duration,
        from_number=e164(from_number),
        answered_by=answered_by,
    )
    if update is None:
        return None
    if update.status == CallStatus.COMPLETED and answered is False:
        status, outcome = UNANSWERED_CAUSES.get(
            (hangup_cause or "").strip().lower(), (CallStatus.FAILED, Outcome.CALL_FAILED)
        )
        update = replace(update, status=status, outcome=outcome)
    if update.status == CallStatus.FAILED and hangup_cause:
        update = replace(update, error_message=hangup_cause)
    return update


def e164(number: str | None) -> str | None:
    """A number as Vobiz writes it (with or without ``+``) in E.164; None if empty."""
    if not number:
        return None
    number = number.strip()
    if number.startswith("sip:"):
        return number
    return number if number.startswith("+") else "+" + number
