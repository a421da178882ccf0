"""Twilio's call statuses in our terms (the adapter's mapping)."""

from __future__ import annotations

import pytest

from shared.lifecycle.states import CallStatus, Outcome
from shared.telephony.twilio import from_twilio


# Twilio's CallStatus words, and the status and outcome each must become (docs/ARCHITECTURE.md).
@pytest.mark.parametrize(
    ("word", "status", "outcome"),
    [
        ("queued", "dispatched", None),
        ("initiated", "initiated", None),
        ("ringing", "initiated", None),
        ("in-progress", "in_progress", None),
        ("completed", "completed", "answered"),
        ("busy", "failed", "busy"),
        ("no-answer", "failed", "no_answer"),
        ("failed", "failed", "call_failed"),
        ("canceled", "cancelled", "canceled"),
    ],
)
def test_twilio_statuses_map_to_statuses_and_outcomes(word, status, outcome):
    update = from_twilio("CA1", word, duration="7")
    assert update is not None
    assert (update.status, update.outcome) == (CallStatus(status), outcome and Outcome(outcome))
    assert update.provider_status == word and update.duration_s == 7


def test_an_unknown_twilio_status_needs_no_work():
    assert from_twilio("CA1", "something-new") is None


def test_a_machine_answer_is_a_voicemail():
    machine = from_twilio("CA1", "completed", answered_by="machine_end_beep")
    assert machine is not None and machine.status == CallStatus.VOICEMAIL
    person = from_twilio("CA1", "completed", answered_by="human")
    assert person is not None and person.status == CallStatus.COMPLETED
