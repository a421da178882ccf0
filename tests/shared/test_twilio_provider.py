"""The Twilio provider, through the SDK and its pooled transport, against the sandbox carrier."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from twilio.request_validator import RequestValidator

from sandbox import SandboxCarrier, SandboxConfig
from shared.errors import ProviderError
from shared.lifecycle.states import CallStatus
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings
from shared.telephony.port import DialRequest
from shared.telephony.twilio import (
    PooledHttpClient,
    TwilioAccount,
    TwilioProvider,
    callback_is_authentic,
    request_signature,
)
from shared.voicemail import MachineDetection

CALLER = "+12025550100"


@pytest.fixture
def carrier() -> Iterator[SandboxCarrier]:
    with SandboxCarrier(
        SandboxConfig.from_dict(
            {
                "default_ring_seconds": 0,
                "default_talk_seconds": 0,
                "rules": [
                    {"pattern": "+12125550900", "timeout_seconds": 1.0},
                    {"pattern": "+12125550901", "http_error": 503, "error_code": 20500},
                ],
            }
        )
    ).start() as running:
        yield running


def provider_at(base_url: str, timeout: float = 5.0) -> TwilioProvider:
    account = TwilioAccount(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, base_url)
    return TwilioProvider(account, Settings(provider_timeout_s=timeout))


def dial(to: str, send_before: float | None = None) -> DialRequest:
    return DialRequest(
        call_id="c1",
        to=to,
        from_=CALLER,
        answer_url="http://127.0.0.1:9/twiml",
        status_callback_url="http://127.0.0.1:9/status",
        ringing_timeout_s=25,
        time_limit_s=1800,
        send_before=send_before,
    )


def test_place_call_sends_every_field_and_reads_the_answer(carrier: SandboxCarrier):
    provider = provider_at(carrier.base_url)
    placed = provider.place_call(dial("+12125550001"))
    [call] = carrier.calls()
    assert placed.sid == call["sid"] and placed.provider_status == "queued"
    # The placed call in our terms, with the number it was placed from.
    assert (placed.status, placed.update.sid) == (CallStatus.DISPATCHED, placed.sid)
    assert placed.update.from_number == CALLER
    assert (call["to"], call["from"], call["timeout"]) == ("+12125550001", CALLER, 25)
    assert call["time_limit"] == 1800
    assert call["status_callback"] == "http://127.0.0.1:9/status"
    # A list is one form field repeated, as Twilio expects it.
    assert call["events"] == ["answered", "completed"]
    assert provider.fetch_call(placed.sid) is not None
    found = provider.find_call("+12125550001", [CALLER], datetime.now(UTC))
    assert found is not None and found.sid == placed.sid


def test_the_transport_sends_a_request_for_another_host_through_its_pool_manager(
    carrier: SandboxCarrier,
):
    # Requests to the base URL's host skip the manager; any other URL still reaches its host.
    client = PooledHttpClient("http://127.0.0.1:9", timeout=5.0)
    url = f"{carrier.base_url}/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Calls.json"
    answer = client.request(
        "POST",
        url,
        data={"To": "+12125550003", "From": CALLER, "Url": "http://127.0.0.1:9/twiml"},
        auth=(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN),
    )
    assert answer.status_code == 201, answer.text
    assert [call["to"] for call in carrier.calls()] == ["+12125550003"]


def test_provider_refusal_carries_twilio_status_and_code(carrier: SandboxCarrier):
    with pytest.raises(ProviderError) as refused:
        provider_at(carrier.base_url).place_call(dial("12125550002"))
    assert (refused.value.status, refused.value.code) == (400, 21211)
    assert not refused.value.retryable and not refused.value.ambiguous


def test_server_errors_are_resent_and_then_reported_retryable(carrier: SandboxCarrier):
    with pytest.raises(ProviderError) as failed:
        provider_at(carrier.base_url).place_call(dial("+12125550901"))
    assert failed.value.retryable and failed.value.status == 503
    assert carrier.stats()["create_requests_total"] == 4  # the first try and three resends


def test_a_late_answer_is_ambiguous_and_never_resent(carrier: SandboxCarrier):
    with pytest.raises(ProviderError) as late:
        provider_at(carrier.base_url, timeout=0.3).place_call(dial("+12125550900"))
    assert late.value.ambiguous and not late.value.retryable
    assert [call["to"] for call in carrier.calls()] == ["+12125550900"]


def test_a_refused_connection_is_retryable():
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError) as unreachable:
        provider_at(f"http://127.0.0.1:{port}").fetch_call("CA" + "0" * 32)
    assert unreachable.value.retryable and not unreachable.value.ambiguous


def test_callback_signatures_hold_with_or_without_the_port_and_nothing_else():
    settings = Settings(twilio_account_sid="", twilio_auth_token="")  # the sandbox account
    url = "https://switchboard.example:443/v1/telephony/twilio/status/c1"
    params = {"AccountSid": SANDBOX_ACCOUNT_SID, "CallSid": "CA1", "CallStatus": "completed"}
    signer = RequestValidator(SANDBOX_AUTH_TOKEN)
    signed = signer.compute_signature(url, params)
    assert callback_is_authentic(url, params, signed, settings)
    # Signed for the same URL without its port (a proxy on the way may drop it).
    bare = signer.compute_signature(url.replace(":443", ""), params)
    assert callback_is_authentic(url, params, bare, settings)
    assert not callback_is_authentic(url, {**params, "CallStatus": "busy"}, signed, settings)
    forged = RequestValidator("not-the-token").compute_signature(url, params)
    assert not callback_is_authentic(url, params, forged, settings)


def test_request_signatures_are_the_sdks():
    url = "https://switchboard.example/v1/telephony/twilio/status/c1?attempt=2"
    params = {
        "CallSid": "CA1",
        "CallStatus": "completed",
        "To": "+12125550100",
        "CallerName": "Zoë Ünal & Co",
        "Duration": "",
        "AccountSid": SANDBOX_ACCOUNT_SID,
    }
    for token in (SANDBOX_AUTH_TOKEN, "another-token"):
        expected = RequestValidator(token).compute_signature(url, params)
        assert request_signature(token, url, params) == expected
    assert request_signature(SANDBOX_AUTH_TOKEN, url, {}) == RequestValidator(
        SANDBOX_AUTH_TOKEN
    ).compute_signature(url, {})


def test_a_dial_past_its_fence_is_never_sent(carrier: SandboxCarrier):
    provider = provider_at(carrier.base_url)
    with pytest.raises(ProviderError) as raised:
        provider.place_call(dial("+12125550002", send_before=time.monotonic() - 0.01))
    assert raised.value.fenced and raised.value.retryable and not raised.value.ambiguous
    assert carrier.calls() == []
    # Within its fence it goes out, and the fence does not outlive the dial.
    provider.place_call(dial("+12125550002", send_before=time.monotonic() + 5))
    provider.place_call(dial("+12125550003"))
    assert [c["to"] for c in carrier.calls()] == ["+12125550002", "+12125550003"]


def test_a_lookup_never_takes_an_earlier_attempts_call(carrier: SandboxCarrier):
    provider = provider_at(carrier.base_url)
    since = datetime.now(UTC)
    earlier = provider.place_call(dial("+12125550004"))
    # The lookup goes a minute back for clock skew, so attempt 1's call is within reach.
    assert provider.find_call("+12125550004", [CALLER], since).sid == earlier.sid
    assert provider.find_call("+12125550004", [CALLER], since, exclude={earlier.sid}) is None
    current = provider.place_call(dial("+12125550004"))
    found = provider.find_call("+12125550004", [CALLER], since, exclude={earlier.sid})
    assert found is not None and found.sid == current.sid


def test_a_dial_without_urls_gets_the_adapters_own(
    carrier: SandboxCarrier, monkeypatch: pytest.MonkeyPatch
):
    provider = provider_at(carrier.base_url)
    monkeypatch.setattr(provider.settings, "public_base_url", "https://switchboard.example")
    monkeypatch.setattr(provider.settings, "twilio_callback_overrides", "rc=5")
    provider.place_call(
        DialRequest(
            call_id="c7",
            to="+12125550005",
            from_=CALLER,
            ringing_timeout_s=25,
            time_limit_s=1800,
            machine_detection=MachineDetection.ANSWERED_BY,
        )
    )
    [call] = carrier.calls()
    base = "https://switchboard.example/v1/telephony/twilio"
    assert call["url"] == f"{base}/twiml/c7"
    assert call["status_callback"] == f"{base}/status/c7#rc=5"
    assert call["amd_callback"] == f"{base}/amd/c7#rc=5"
    assert provider.pacing_key == SANDBOX_ACCOUNT_SID and provider.name == "twilio"
