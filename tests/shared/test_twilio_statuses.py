"""Twilio's call statuses in our terms (the adapter's mapping)."""

from __future__ import annotations

from shared.lifecycle.states import CallStatus, Outcome
from shared.telephony.twilio import from_twilio


def test_twilio_statuses_map_to_statuses_and_outcomes():
    expected = {
        "queued": (CallStatus.DISPATCHED, None),
        "initiated": (CallStatus.INITIATED, None),
        "ringing": (CallStatus.INITIATED, None),
        "in-progress": (CallStatus.IN_PROGRESS, None),
        "completed": (CallStatus.COMPLETED, Outcome.ANSWERED),
        "busy": (CallStatus.FAILED, Outcome.BUSY),
        "no-answer": (CallStatus.FAILED, Outcome.NO_ANSWER),
        "failed": (CallStatus.FAILED, Outcome.CALL_FAILED),
        "canceled": (CallStatus.CANCELLED, Outcome.CANCELED),
    }
    for twilio_status, mapped in expected.items():
        update = from_twilio("CA1", twilio_status, duration="7")
        assert update is not None and (update.status, update.outcome) == mapped
        assert update.provider_status == twilio_status and update.duration_s == 7
    assert from_twilio("CA1", "something-new") is None


def test_a_machine_answer_is_a_voicemail():
    machine = from_twilio("CA1", "completed", answered_by="machine_end_beep")
    assert machine is not None and machine.status == CallStatus.VOICEMAIL
    person = from_twilio("CA1", "completed", answered_by="human")
    assert person is not None and person.status == CallStatus.COMPLETED
