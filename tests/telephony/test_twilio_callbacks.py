"""Twilio's callbacks read by the adapter into provider-neutral reports (pure: no stack)."""

from __future__ import annotations

import pytest

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings, get_settings
from shared.telephony import registry, reports
from shared.telephony.port import AnsweredBy, DetectionVerdict
from shared.telephony.twilio import (
    CALLBACKS,
    TwilioProvider,
    connect_agent_detection,
    request_signature,
)
from tests.support import modules_after


def form(**fields: str) -> dict[str, str]:
    return {"AccountSid": SANDBOX_ACCOUNT_SID, "CallSid": "CA1", **fields}


@pytest.mark.parametrize(
    ("twilio_status", "status", "outcome"),
    [
        ("queued", CallStatus.DISPATCHED, None),
        ("initiated", CallStatus.INITIATED, None),
        ("in-progress", CallStatus.IN_PROGRESS, None),
        ("completed", CallStatus.COMPLETED, Outcome.ANSWERED),
        ("busy", CallStatus.FAILED, Outcome.BUSY),
        ("no-answer", CallStatus.FAILED, Outcome.NO_ANSWER),
        ("failed", CallStatus.FAILED, Outcome.CALL_FAILED),
        ("canceled", CallStatus.CANCELLED, Outcome.CANCELED),
    ],
)
def test_a_status_callback_reads_as_our_status_and_outcome(
    twilio_status: str, status: CallStatus, outcome: Outcome | None
):
    update = CALLBACKS.status_update(form(CallStatus=twilio_status, CallDuration="12"))
    assert update == ProviderUpdate(
        sid="CA1", status=status, provider_status=twilio_status, outcome=outcome, duration_s=12
    )


def test_a_status_callback_keeps_the_caller_the_error_and_the_detection():
    update = CALLBACKS.status_update(
        form(
            CallStatus="completed",
            CallDuration="",
            From="+12025550100",
            ErrorCode="31005",
            ErrorMessage="gone",
            AnsweredBy="machine_end_beep",
        )
    )
    assert update is not None
    assert (update.status, update.outcome) == (CallStatus.VOICEMAIL, Outcome.VOICEMAIL)
    assert update.duration_s is None and update.from_number == "+12025550100"
    assert (update.error_code, update.error_message) == ("31005", "gone")
    assert update.answered_by == "machine_end_beep"


def test_ringing_and_unknown_statuses_need_no_work():
    assert CALLBACKS.status_update(form(CallStatus="ringing")) is None
    assert CALLBACKS.status_update(form(CallStatus="something-new")) is None
    assert CALLBACKS.status_update(form()) is None


@pytest.mark.parametrize(
    ("answered_by", "recorded", "kind"),
    [
        ("machine_start", "machine_start", AnsweredBy.MACHINE),
        ("machine_end_beep", "machine_end_beep", AnsweredBy.MACHINE),
        ("machine_end_silence", "machine_end_silence", AnsweredBy.MACHINE),
        ("human", "human", AnsweredBy.HUMAN),
        ("fax", "fax", AnsweredBy.FAX),
        ("unknown", "unknown", AnsweredBy.UNKNOWN),
        ("a-new-word", "unknown", AnsweredBy.UNKNOWN),
        ("", "", AnsweredBy.UNKNOWN),
    ],
)
def test_a_detection_callback_reads_as_a_verdict(answered_by: str, recorded: str, kind: AnsweredBy):
    verdict = CALLBACKS.detection_verdict(
        form(AnsweredBy=answered_by, MachineDetectionDuration="3100")
    )
    assert verdict == DetectionVerdict(sid="CA1", answered_by=recorded, detection_ms=3100)
    assert verdict.kind is kind


def test_reports_are_queued_in_our_terms_and_read_back_as_they_were():
    update = CALLBACKS.status_update(form(CallStatus="busy", From="+12025550100"))
    assert update is not None
    queued = reports.status_report(update)
    assert queued == {
        "kind": "status",
        "sid": "CA1",
        "status": "failed",
        "provider_status": "busy",
        "outcome": "busy",
        "from_number": "+12025550100",
    }
    assert reports.read_report(queued) == update
    verdict = CALLBACKS.detection_verdict(form(AnsweredBy="machine_start"))
    assert reports.read_report(reports.verdict_report(verdict)) == verdict


def test_reports_queued_before_the_port_are_still_read():
    legacy_status = {"sid": "CA1", "status": "completed", "duration": "7", "from": "+1202555"}
    update = reports.read_report(legacy_status)
    assert isinstance(update, ProviderUpdate)
    assert (update.status, update.duration_s, update.from_number) == (
        CallStatus.COMPLETED,
        7,
        "+1202555",
    )
    legacy_verdict = {"event": "amd", "sid": "CA1", "answered_by": "machine_end_beep"}
    assert reports.read_report(legacy_verdict) == DetectionVerdict("CA1", "machine_end_beep")
    assert reports.read_report({"sid": "CA1", "status": "something-new"}) is None


def test_the_worker_splits_queued_reports_into_updates_and_verdicts():
    from shared.services.status_inbox import read_reports

    busy = CALLBACKS.status_update(form(CallStatus="busy"))
    assert busy is not None
    queued = [
        ("c1", reports.status_report(busy)),
        ("c2", reports.verdict_report(DetectionVerdict("CA2", "human"))),
        ("c3", {"sid": "CA3", "status": "no-answer"}),  # queued before the port
        ("c4", {"sid": "CA4", "status": "something-new"}),
    ]
    updates, verdicts = read_reports(queued)
    assert [(call_id, update.status) for call_id, update in updates] == [
        ("c1", CallStatus.FAILED),
        ("c3", CallStatus.FAILED),
    ]
    assert [(v.call_id, v.sid, v.answered_by) for v in verdicts] == [("c2", "CA2", "human")]


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = get_settings()
    monkeypatch.setattr(settings, "twilio_account_sid", "")  # the sandbox's account
    monkeypatch.setattr(settings, "twilio_callback_overrides", "rc=5")
    monkeypatch.setattr(settings, "voice_runtime_url", "wss://agents.example/stream?a=1&b=2")
    return settings


def test_a_callback_is_verified_by_its_signature_header(settings: Settings):
    url = "https://switchboard.example/v1/telephony/twilio/status/c1"
    params = form(CallStatus="completed")
    signature = request_signature(SANDBOX_AUTH_TOKEN, url, params)
    assert CALLBACKS.verify(url, params, {"x-twilio-signature": signature})
    with_fragment = request_signature(SANDBOX_AUTH_TOKEN, url + "#rc=5", params)
    assert CALLBACKS.verify(url, params, {"x-twilio-signature": with_fragment})
    assert not CALLBACKS.verify(url, params, {})
    assert not CALLBACKS.verify(
        url, {**params, "CallStatus": "busy"}, {"x-twilio-signature": signature}
    )
    # A callback naming another account is checked against the provider connections, in the
    # database: tests/api/test_provider_connections.py.


def test_the_answer_document_streams_the_call_to_the_agent_runtime(settings: Settings):
    media_type, twiml = CALLBACKS.answer_document("c<&1")
    assert media_type == "application/xml"
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>')
    assert '<Stream url="wss://agents.example/stream?a=1&amp;b=2">' in twiml
    assert '<Parameter name="call_id" value="c&lt;&amp;1"/>' in twiml
    assert "/v1/voiceai/calls/c&lt;&amp;1/agent-config?expires=" in twiml


def test_the_registry_hands_out_twilio_by_name():
    assert registry.callbacks_for("twilio") is CALLBACKS
    provider = registry.provider_for("twilio", None)
    assert isinstance(provider, TwilioProvider)
    assert registry.provider_for(None, "default") is provider  # one per account
    assert provider.pacing_key == provider.account.account_sid
    assert provider.connect_agent_detection is connect_agent_detection(provider.settings)


def test_the_adapter_pulls_in_no_sql():
    sql = ("sqlalchemy", "shared.repositories", "shared.db", "shared.services", "shared.dispatch")
    loaded = modules_after("shared.telephony.registry, shared.telephony.reports")
    assert sorted(m for m in loaded if m.startswith((*sql, "shared.batches"))) == []
