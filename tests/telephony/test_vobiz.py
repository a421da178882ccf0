"""The Vobiz adapter: its status table, its callbacks, and its provider through the real SDK
against the sandbox carrier's Vobiz API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sandbox import SandboxCarrier, SandboxConfig, vobiz_api
from shared.dispatch.pacing import pacing_limits
from shared.errors import ProviderError
from shared.lifecycle.states import CallStatus, Outcome
from shared.settings import SANDBOX_VOBIZ_AUTH_ID, SANDBOX_VOBIZ_AUTH_TOKEN, Settings, get_settings
from shared.telephony import registry
from shared.telephony.port import AnswerReports, DialRequest
from shared.telephony.vobiz import CALLBACKS, VobizAccount, VobizProvider, from_vobiz
from shared.telephony.vobiz import client as vobiz_client
from shared.voicemail import MachineDetection
from tests.support import modules_after, wait_for

CALLER = "+12025550100"
# Nothing listens here: the carrier's callbacks to it are refused and given up.
NOWHERE = "http://127.0.0.1:9/v1/telephony/vobiz/status/c1"


@pytest.mark.parametrize(
    ("status", "answered", "cause", "machine", "expected"),
    [
        ("queued", None, None, None, (CallStatus.DISPATCHED, None)),
        ("ringing", None, None, None, (CallStatus.INITIATED, None)),
        ("in-progress", None, None, None, (CallStatus.IN_PROGRESS, None)),
        ("completed", True, "Normal Hangup", None, (CallStatus.COMPLETED, Outcome.ANSWERED)),
        ("completed", True, "Normal Hangup", "machine", (CallStatus.VOICEMAIL, Outcome.VOICEMAIL)),
        ("completed", True, None, "human", (CallStatus.COMPLETED, Outcome.ANSWERED)),
        ("busy", False, "Busy Line", None, (CallStatus.FAILED, Outcome.BUSY)),
        ("no-answer", False, "No Answer", None, (CallStatus.FAILED, Outcome.NO_ANSWER)),
        ("failed", False, "Network Error", None, (CallStatus.FAILED, Outcome.CALL_FAILED)),
        ("timeout", False, None, None, (CallStatus.FAILED, Outcome.CALL_FAILED)),
        ("cancel", False, "Canceled", None, (CallStatus.CANCELLED, Outcome.CANCELED)),
        ("canceled", None, None, None, (CallStatus.CANCELLED, Outcome.CANCELED)),
        # A final "completed" of a call never answered says what happened in its cause.
        ("completed", False, "Busy Line", None, (CallStatus.FAILED, Outcome.BUSY)),
        ("completed", False, "Ring Timeout Reached", None, (CallStatus.FAILED, Outcome.NO_ANSWER)),
        ("completed", False, "Canceled", None, (CallStatus.CANCELLED, Outcome.CANCELED)),
        ("completed", False, "Rejected", None, (CallStatus.FAILED, Outcome.CALL_FAILED)),
    ],
)
def test_vobiz_statuses_map_onto_ours(status, answered, cause, machine, expected):
    update = from_vobiz(
        "u1", status, answered=answered, hangup_cause=cause, answered_by=machine, from_number="1202"
    )
    assert update is not None
    assert (update.status, update.outcome) == expected
    assert update.provider_status == status and update.from_number == "+1202"


def test_an_unknown_vobiz_status_needs_no_work():
    assert from_vobiz("u1", "early-media-ish") is None
    assert CALLBACKS.status_update({"CallUUID": "u1", "CallStatus": "strange"}) is None


def _hangup_form(**fields: str) -> dict[str, str]:
    form = {
        "CallUUID": "u1",
        "RequestUUID": "u1",
        "From": "+12025550100",
        "To": "+12125550100",
        "Direction": "outbound",
        "CallStatus": "completed",
        "Event": "Hangup",
        "Duration": "7",
        "AnswerTime": "2026-12-04 10:00:01",
        "HangupCauseName": "Normal Hangup",
    }
    return {**form, **fields}


def test_callbacks_read_hangup_ring_answer_and_detection_forms():
    update = CALLBACKS.status_update(_hangup_form())
    assert update is not None
    assert (update.sid, update.status, update.outcome, update.duration_s) == (
        "u1",
        CallStatus.COMPLETED,
        Outcome.ANSWERED,
        7,
    )
    machine = CALLBACKS.status_update(_hangup_form(Machine="true"))
    assert machine is not None and machine.status == CallStatus.VOICEMAIL
    unanswered = CALLBACKS.status_update(
        _hangup_form(AnswerTime="", Duration="0", HangupCauseName="No Answer")
    )
    assert unanswered is not None and unanswered.outcome == Outcome.NO_ANSWER
    ring = CALLBACKS.status_update({"CallUUID": "u1", "CallStatus": "ringing", "Event": "Ring"})
    assert ring is not None and ring.status == CallStatus.INITIATED
    assert isinstance(CALLBACKS, AnswerReports)
    answered = CALLBACKS.answer_update({"CallUUID": "u1", "CallStatus": "in-progress"})
    assert answered is not None and answered.status == CallStatus.IN_PROGRESS
    assert CALLBACKS.detection_verdict({"CallUUID": "u1", "Machine": "true"}).answered_by == (
        "machine"
    )
    assert CALLBACKS.detection_verdict({"CallUUID": "u1", "Machine": "false"}).answered_by == (
        "human"
    )


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = get_settings()
    # Development mode, without a Vobiz account: the sandbox carrier's account.
    monkeypatch.setattr(settings, "env", "dev")
    monkeypatch.setattr(settings, "vobiz_auth_id", "")
    monkeypatch.setattr(settings, "voice_runtime_url", "wss://agents.example/stream")
    return settings


def test_a_callback_is_verified_by_its_v3_signature(settings: Settings):
    url = "https://switchboard.example/v1/telephony/vobiz/status/c1"
    params = _hangup_form()
    headers = {
        k.lower(): v
        for k, v in vobiz_api.signature_headers(SANDBOX_VOBIZ_AUTH_TOKEN, url, params).items()
    }
    assert CALLBACKS.verify(url, params, headers)
    # Another form, URL, token or nonce under the same signature: refused.
    assert not CALLBACKS.verify(url, {**params, "CallStatus": "busy"}, headers)
    assert not CALLBACKS.verify(url.replace("c1", "c2"), params, headers)
    assert not CALLBACKS.verify(url, params, {**headers, "x-vobiz-signature-v3-nonce": "1" * 20})
    forged = vobiz_api.signature_headers("not-the-token", url, params)
    assert not CALLBACKS.verify(url, params, {k.lower(): v for k, v in forged.items()})
    assert not CALLBACKS.verify(url, params, {})


def test_production_without_a_vobiz_account_neither_dials_nor_trusts_the_sandbox(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(settings, "env", "production")
    with pytest.raises(ProviderError) as refused:
        vobiz_client.account_for(settings)
    assert refused.value.auth_failed and "SWITCHBOARD_VOBIZ_AUTH_ID" in str(refused.value)
    # A callback signed with the sandbox's (published) token is not ours.
    url = "https://switchboard.example/v1/telephony/vobiz/status/c1"
    params = _hangup_form()
    signed = vobiz_api.signature_headers(SANDBOX_VOBIZ_AUTH_TOKEN, url, params)
    assert not CALLBACKS.verify(url, params, {k.lower(): v for k, v in signed.items()})


def test_the_answer_document_streams_the_call_to_the_agent_runtime(settings: Settings):
    media_type, xml = CALLBACKS.answer_document("c<&1")
    assert media_type == "application/xml"
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Stream ')
    assert 'bidirectional="true"' in xml and 'keepCallAlive="true"' in xml
    assert ">wss://agents.example/stream</Stream>" in xml
    assert "call_id=c&lt;&amp;1,agent_config_url=" in xml
    assert "/v1/voiceai/calls/c&lt;&amp;1/agent-config?expires=" in xml


def test_the_message_document_speaks_the_message_then_hangs_up(settings: Settings):
    media_type, xml = CALLBACKS.message_document("Hi <Ada> & co")
    assert media_type == "application/xml"
    assert xml.endswith("<Response><Speak>Hi &lt;Ada&gt; &amp; co</Speak><Hangup/></Response>")
    assert CALLBACKS.message_document(" ")[1].endswith("<Response><Hangup/></Response>")


def test_the_registry_hands_out_vobiz_by_name(settings: Settings):
    provider = registry.provider_for("vobiz", "default")
    assert provider.name == "vobiz"
    assert registry.provider_for("vobiz", None) is provider  # one per account
    assert provider.pacing_key == f"vobiz:{SANDBOX_VOBIZ_AUTH_ID}"
    assert registry.callbacks_for("vobiz") is CALLBACKS


def test_a_vobiz_number_is_paced_on_its_vobiz_account_and_its_own_number(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(settings, "calls_per_second_per_number", 2.0)
    account, pool = pacing_limits("vobiz", "default", [CALLER, "+12025550199"])
    assert [limit.key for limit in account] == [f"account:vobiz:{SANDBOX_VOBIZ_AUTH_ID}"]
    assert [limit.key for limit in pool] == [f"number:{CALLER}", "number:+12025550199"]
    twilio, _ = pacing_limits("twilio", "default", [CALLER])
    assert twilio[0].key != account[0].key  # two providers' accounts never share a budget


@pytest.fixture
def carrier() -> Iterator[SandboxCarrier]:
    config = SandboxConfig.from_dict(
        {
            "rules": [
                {"pattern": "+1212555000*", "outcome": "completed", "ring_seconds": 0.3},
                {"pattern": "+12125550010", "outcome": "busy"},
                {"pattern": "+12125550020", "http_error": 429, "http_error_probability": 1.0},
                {"pattern": "+12125550030", "http_error": 500},
            ],
            "default_talk_seconds": 30,
        }
    )
    with SandboxCarrier(config) as running:
        yield running


def _provider(carrier: SandboxCarrier, token: str = SANDBOX_VOBIZ_AUTH_TOKEN) -> VobizProvider:
    account = VobizAccount(SANDBOX_VOBIZ_AUTH_ID, token, carrier.base_url + "/api")
    return VobizProvider(account, get_settings())


def _dial(to: str, **extra: object) -> DialRequest:
    return DialRequest(
        call_id="c1",
        to=to,
        from_=CALLER,
        ringing_timeout_s=25,
        time_limit_s=600,
        answer_url="http://127.0.0.1:9/v1/telephony/vobiz/answer/c1",
        status_callback_url=NOWHERE,
        machine_detection_callback_url="http://127.0.0.1:9/v1/telephony/vobiz/amd/c1",
        **extra,  # type: ignore[arg-type]
    )


def test_a_call_is_placed_looked_up_and_ended_through_the_sdk(carrier: SandboxCarrier):
    provider = _provider(carrier)
    since = datetime.now(UTC)
    placed = provider.place_call(
        _dial("+12125550001", machine_detection=MachineDetection.ANSWERED_BY)
    )
    assert placed.status == CallStatus.DISPATCHED and placed.update.from_number == CALLER
    (record,) = carrier.calls()
    assert record["sid"] == placed.sid and record["api"] == "vobiz"
    assert (record["timeout"], record["time_limit"]) == (25, 600)
    assert record["machine_detection"] == "Enable" and record["async_amd"]
    assert record["status_callback"] == NOWHERE and record["ring_url"] == NOWHERE
    assert record["url"].endswith("/v1/telephony/vobiz/answer/c1")

    ringing = wait_for(
        lambda: (lambda u: u if u and u.status == CallStatus.INITIATED else None)(
            provider.fetch_call(placed.sid)
        ),
        5,
        what="the call to ring",
    )
    assert ringing.provider_status == "ringing"
    found = provider.find_call("+12125550001", [CALLER, "+12025550199"], since)
    assert found is not None and found.sid == placed.sid
    # An earlier attempt's call, a call to another number, or from elsewhere, is no match.
    assert provider.find_call("+12125550001", [CALLER], since, exclude={placed.sid}) is None
    assert provider.find_call("+12125550002", [CALLER], since) is None
    assert provider.find_call("+12125550001", ["+12025550199"], since) is None
    # A live call is found whenever it started (Vobiz's live view has no creation time we
    # could trust): a dial is never taken for absent while its call is up.
    later = since + timedelta(minutes=5)
    assert provider.find_call("+12125550001", [CALLER], later) is not None

    wait_for(
        lambda: (lambda u: u if u and u.status == CallStatus.IN_PROGRESS else None)(
            provider.fetch_call(placed.sid)
        ),
        5,
        what="the call to be answered",
    )
    assert provider.end_call(placed.sid, answered=True) is None  # its end comes by callback
    ended = provider.fetch_call(placed.sid)
    assert ended is not None and (ended.status, ended.outcome) == (
        CallStatus.COMPLETED,
        Outcome.ANSWERED,
    )
    assert provider.find_call("+12125550001", [CALLER], later) is None  # ended, and older
    with pytest.raises(ProviderError) as gone:
        provider.end_call(placed.sid, answered=True)
    assert gone.value.status == 404
    assert provider.fetch_call("no-such-call") is None


def test_a_ringing_call_is_cancelled_and_a_busy_one_fails(carrier: SandboxCarrier):
    provider = _provider(carrier)
    placed = provider.place_call(_dial("+12125550002"))
    provider.end_call(placed.sid, answered=False)
    cancelled = provider.fetch_call(placed.sid)
    assert cancelled is not None and cancelled.status == CallStatus.CANCELLED
    busy = provider.place_call(_dial("+12125550010"))
    update = wait_for(
        lambda: (lambda u: u if u and u.status == CallStatus.FAILED else None)(
            provider.fetch_call(busy.sid)
        ),
        5,
        what="the busy call to end",
    )
    assert update.outcome == Outcome.BUSY


def test_errors_are_read_as_the_dispatcher_needs_them(carrier: SandboxCarrier):
    with pytest.raises(ProviderError) as refused:
        _provider(carrier, token="wrong").place_call(_dial("+12125550003"))
    assert refused.value.auth_failed and refused.value.status == 401
    with pytest.raises(ProviderError) as busy_api:
        _provider(carrier).place_call(_dial("+12125550020"))
    assert busy_api.value.retryable and not busy_api.value.ambiguous
    assert carrier.stats()["rejected_429"] == 4  # sent again after each 429, then given up
    with pytest.raises(ProviderError) as broken:
        _provider(carrier).place_call(_dial("+12125550030"))
    # A 5xx answer to a dial may come after the call was placed: never sent again.
    assert broken.value.ambiguous and not broken.value.retryable
    assert carrier.stats()["rejected_500"] == 1
    with pytest.raises(ProviderError) as fenced:
        _provider(carrier).place_call(_dial("+12125550004", send_before=time.monotonic() - 1))
    assert fenced.value.fenced
    assert [c["to"] for c in carrier.calls()] == []
    _provider(carrier).check_account()
    with pytest.raises(ProviderError) as unreachable:
        VobizProvider(
            VobizAccount(SANDBOX_VOBIZ_AUTH_ID, "t", "http://127.0.0.1:9/api"), get_settings()
        ).check_account()
    assert unreachable.value.retryable


def test_the_sdk_loads_with_the_first_vobiz_call_not_with_the_adapter():
    loaded = modules_after("shared.telephony.registry")
    assert sorted({m.split(".")[0] for m in loaded} & {"vobiz", "lxml"}) == []
