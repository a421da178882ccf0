"""The call-progress words Twilio and Vobiz share (both speak the same REST vocabulary for a
call's progress), in our terms: each adapter's status table starts from this one and adds the
words of its own provider."""

from __future__ import annotations

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome

# A provider's call status → (our status, outcome when final).
StatusTable = dict[str, tuple[CallStatus, Outcome | None]]

SHARED_STATUSES: StatusTable = {
    "queued": (CallStatus.DISPATCHED, None),
    "ringing": (CallStatus.INITIATED, None),
    "in-progress": (CallStatus.IN_PROGRESS, None),
    "completed": (CallStatus.COMPLETED, Outcome.ANSWERED),
    "busy": (CallStatus.FAILED, Outcome.BUSY),
    "no-answer": (CallStatus.FAILED, Outcome.NO_ANSWER),
    "failed": (CallStatus.FAILED, Outcome.CALL_FAILED),
    "canceled": (CallStatus.CANCELLED, Outcome.CANCELED),
}


def progress_update(
    table: StatusTable,
    sid: str,
    call_status: str,
    *,
    machine: bool,
    duration: str | int | None,
    error_code: str | None = None,
    error_message: str | None = None,
    from_number: str | None = None,
    answered_by: str | None = None,
) -> ProviderUpdate | None:
    """A provider's report of a call's progress (``call_status`` in ``table``'s words; its
    duration in seconds) in our terms; None for a word the table does not know. A completed
    call a ``machine`` answered is a voicemail."""
    mapped = table.get(call_status.strip().lower())
    if mapped is None:
        return None
    status, outcome = mapped
    if status == CallStatus.COMPLETED and machine:
        status, outcome = CallStatus.VOICEMAIL, Outcome.VOICEMAIL
    return ProviderUpdate(
        sid=sid,
        status=status,
        provider_status=call_status,
        outcome=outcome,
        duration_s=int(float(duration)) if duration not in (None, "") else None,
        error_code=error_code or None,
        error_message=error_message or None,
        from_number=from_number or None,
        answered_by=answered_by or None,
    )
