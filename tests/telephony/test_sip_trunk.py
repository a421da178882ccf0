"""The SIP trunk adapter: the URI and credentials a dial carries, the trunk's SIP responses in
our terms (pure), and dials through the real twilio SDK to the sandbox carrier's trunks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from sandbox import SandboxCarrier, SandboxConfig
from sandbox.twilio_api import FINAL, status_callback_form
from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings
from shared.telephony import registry, sip_trunk
from shared.telephony.port import DialRequest
from shared.telephony.sip_trunk import CALLBACKS, SipTrunkProvider, Trunk
from shared.telephony.twilio import TwilioAccount, TwilioProvider
from shared.telephony.twilio.client import SCAN_LIMIT
from tests.support import wait_for

CALLER = "+12025550100"
TRUNK = Trunk(
    connection_id="conn_1",
    address="trunk.example.com:5061",
    transport="tls",
    media_encryption="required",
    headers=(("X-Campaign", "spring sale&more"), ("X-Tenant", "acme")),
    username="trunk-user",
    password="s3cret-pw",
)


def test_the_uri_names_the_number_the_trunk_its_transport_and_headers():
    assert TRUNK.uri("+12125550001") == (
        "sip:+12125550001@trunk.example.com:5061;transport=tls;secure=true"
        "?X-Campaign=spring%20sale%26more&X-Tenant=acme"
    )
    plain = Trunk(connection_id="c", address="10.0.0.1")
    assert plain.uri("+12125550001") == "sip:+12125550001@10.0.0.1"
    assert plain.auth() == {}
    assert TRUNK.auth() == {"sip_auth_username": "trunk-user", "sip_auth_password": "s3cret-pw"}


def test_a_trunk_never_shows_its_credentials():
    assert "s3cret-pw" not in repr(TRUNK) and "trunk-user" not in repr(TRUNK)


def test_a_trunk_reads_back_from_its_connection():
    trunk = Trunk.of_connection(
        "conn_1",
        "trunk.example.com:5061",
        {
            "transport": "tls",
            "media_encryption": "required",
            "headers": {"X-Tenant": "acme", "X-Campaign": "spring sale&more"},
        },
        {"username": "trunk-user", "password": "s3cret-pw"},
    )
    assert trunk == TRUNK


def form(status: str, code: str | None = None, **fields: str) -> dict[str, str]:
    params = {"AccountSid": SANDBOX_ACCOUNT_SID, "CallSid": "CA1", "CallStatus": status, **fields}
    if code is not None:
        params["SipResponseCode"] = code
    return params


@pytest.mark.parametrize(
    ("twilio_status", "code", "outcome", "error_code"),
    [
        ("busy", "486", Outcome.BUSY, "sip_486"),
        ("busy", "600", Outcome.BUSY, "sip_600"),
        ("no-answer", "480", Outcome.NO_ANSWER, "sip_480"),
        ("failed", "408", Outcome.NO_ANSWER, "sip_408"),
        ("failed", "404", Outcome.CALL_FAILED, "sip_404"),
        ("failed", "484", Outcome.CALL_FAILED, "sip_484"),
        ("failed", "403", Outcome.PROVIDER_AUTH_FAILED, "sip_403"),
        ("failed", "407", Outcome.PROVIDER_AUTH_FAILED, "sip_407"),
        # Codes outside the table leave Twilio's status to decide.
        ("failed", "500", Outcome.CALL_FAILED, None),
        ("no-answer", "487", Outcome.NO_ANSWER, None),
        ("busy", None, Outcome.BUSY, None),
    ],
)
def test_sip_responses_map_onto_our_outcomes(
    twilio_status: str, code: str | None, outcome: Outcome, error_code: str | None
):
    update = CALLBACKS.status_update(form(twilio_status, code, CallDuration="0"))
    assert update is not None
    assert (update.status, update.outcome, update.error_code) == (
        CallStatus.FAILED,
        outcome,
        error_code,
    )
    if code in ("404", "484"):
        assert update.error_message is not None and "invalid number" in update.error_message
    if code in ("403", "407"):
        assert update.error_message is not None and "refused our credentials" in (
            update.error_message
        )


def test_a_connected_call_keeps_its_outcome_whatever_the_code():
    update = CALLBACKS.status_update(form("completed", "200", CallDuration="7"))
    assert update == ProviderUpdate(
        sid="CA1",
        status=CallStatus.COMPLETED,
        provider_status="completed",
        outcome=Outcome.ANSWERED,
        duration_s=7,
    )
    assert CALLBACKS.status_update(form("ringing")) is None  # as for Twilio: nothing to do


def test_the_trunk_is_registered_with_its_callback_endpoints():
    assert registry.callbacks_for("sip_trunk") is CALLBACKS
    assert (CALLBACKS.answer_endpoint, CALLBACKS.signature_header) == (
        "twiml",
        "X-Twilio-Signature",
    )
    media_type, body = CALLBACKS.answer_document("call_1")
    assert media_type == "application/xml" and "<Stream" in body


# -- through the SDK to the sandbox carrier's trunks -----------------------------------------

SANDBOX_TRUNKS = {
    "trunk.example.com:5061": {
        "username": "trunk-user",
        "password": "s3cret-pw",
        "transport": "tls",
    },
    "open.example.com": {},
}


@pytest.fixture
def carrier() -> Iterator[SandboxCarrier]:
    config = {
        "default_ring_seconds": 0,
        "default_talk_seconds": 0,
        "sip_trunks": SANDBOX_TRUNKS,
        "rules": [
            {"pattern": "+12125550486", "sip_response": 486},
            {"pattern": "+12125550404", "sip_response": 404},
        ],
    }
    with SandboxCarrier(SandboxConfig.from_dict(config)).start() as running:
        yield running


def provider_at(carrier: SandboxCarrier, trunk: Trunk = TRUNK) -> SipTrunkProvider:
    settings = Settings(provider_timeout_s=5, public_base_url="http://127.0.0.1:9")
    account = TwilioAccount(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, carrier.base_url)
    return SipTrunkProvider(trunk, TwilioProvider(account, settings))


def dial(to: str) -> DialRequest:
    return DialRequest(call_id="c1", to=to, from_=CALLER, ringing_timeout_s=25, time_limit_s=1800)


def final_update(carrier: SandboxCarrier) -> ProviderUpdate | None:
    """The carrier's call's final status callback, as the adapter reads it (the callbacks go
    nowhere: the public URL is made up)."""
    wait_for(lambda: carrier.calls()[0]["status"] in FINAL, 10, what="the call to end")
    [call] = carrier.calls()
    return CALLBACKS.status_update(status_callback_form(call, 0))


def test_a_dial_reaches_the_trunk_with_its_uri_credentials_and_headers(carrier: SandboxCarrier):
    provider = provider_at(carrier)
    placed = provider.place_call(dial("+12125550001"))
    [call] = carrier.calls()
    assert placed.sid == call["sid"] and placed.update.from_number == CALLER
    assert call["to"] == TRUNK.uri("+12125550001")
    assert call["sip"] == {
        "uri": TRUNK.uri("+12125550001"),
        "number": "+12125550001",
        "address": "trunk.example.com:5061",
        "transport": "tls",
        "secure": True,
        "headers": {"X-Campaign": "spring sale&more", "X-Tenant": "acme"},
        "username": "trunk-user",
        "auth": "ok",
    }
    # Our callbacks and TwiML are the trunk's, with Twilio's resend overrides.
    assert call["status_callback"].startswith(
        "http://127.0.0.1:9/v1/telephony/sip_trunk/status/c1#"
    )
    assert call["url"] == "http://127.0.0.1:9/v1/telephony/sip_trunk/twiml/c1"
    assert provider.pacing_key == "conn_1" and provider.name == "sip_trunk"
    found = provider.find_call("+12125550001", [CALLER], datetime.now(UTC))
    assert found is not None and found.sid == placed.sid
    update = final_update(carrier)
    assert update is not None and update.outcome == Outcome.ANSWERED


@pytest.mark.parametrize(
    ("trunk", "number", "code", "outcome"),
    [
        (TRUNK, "+12125550486", 486, Outcome.BUSY),
        (TRUNK, "+12125550404", 404, Outcome.CALL_FAILED),
        (Trunk("c", "unknown.example.com"), "+12125550001", 404, Outcome.CALL_FAILED),
        (
            Trunk("c", "trunk.example.com:5061", transport="tls", username="trunk-user"),
            "+12125550001",
            403,
            Outcome.PROVIDER_AUTH_FAILED,
        ),
        (
            Trunk("c", "trunk.example.com:5061", transport="tls"),
            "+12125550001",
            407,
            Outcome.PROVIDER_AUTH_FAILED,
        ),
        (
            Trunk("c", "trunk.example.com:5061", username="trunk-user", password="s3cret-pw"),
            "+12125550001",
            503,
            Outcome.CALL_FAILED,
        ),
    ],
)
def test_the_trunk_answers_and_the_adapter_reads_it(
    carrier: SandboxCarrier, trunk: Trunk, number: str, code: int, outcome: Outcome
):
    provider_at(carrier, trunk).place_call(dial(number))
    update = final_update(carrier)
    assert carrier.calls()[0]["sip_response"] == code
    assert update is not None and (update.status, update.outcome) == (CallStatus.FAILED, outcome)


def test_a_number_without_a_trunk_cannot_dial_and_fails_its_batch():
    with pytest.raises(ProviderError, match="names no SIP trunk") as refused:
        sip_trunk.provider_for("default")
    assert refused.value.auth_failed  # the dial's error path fails the batch with the reason


def test_a_call_is_recognised_by_the_uri_it_reached_whatever_twilio_kept_of_it():
    reaches = TRUNK.reaches("+12125550001")
    assert reaches(TRUNK.uri("+12125550001"))
    assert reaches("sip:+12125550001@trunk.example.com:5061")  # without params and headers
    assert reaches("sip:+12125550001@TRUNK.example.com;transport=tls")  # no port, upper case
    assert not reaches("sip:+12125550002@trunk.example.com:5061")  # another number
    assert not reaches("sip:+12125550001@other.example.com:5061")  # another trunk
    assert not reaches("sip:+12125550001@trunk.example.com:5062")  # another port
    assert not reaches("+12125550001")  # a phone call, not over the trunk
    ipv6 = Trunk("c", "[2001:db8::1]:5060")
    assert ipv6.reaches("+12125550001")("sip:+12125550001@[2001:db8::1]:5060;transport=udp")


def test_a_lookup_skips_other_numbers_and_earlier_attempts(carrier: SandboxCarrier):
    provider = provider_at(carrier)
    since = datetime.now(UTC)
    first = provider.place_call(dial("+12125550001"))
    provider.place_call(dial("+12125550002"))
    second = provider.place_call(dial("+12125550001"))
    found = provider.find_call("+12125550001", [CALLER], since)
    assert found is not None and found.sid == second.sid
    earlier = provider.find_call("+12125550001", [CALLER], since, exclude={second.sid})
    assert earlier is not None and earlier.sid == first.sid
    assert provider.find_call("+12125550009", [CALLER], since) is None
    assert provider.find_call("+12125550001", ["+12025550199"], since) is None


def test_a_lookup_among_more_calls_than_it_reads_is_ambiguous(carrier: SandboxCarrier):
    provider = provider_at(carrier)
    since = datetime.now(UTC)
    for index in range(SCAN_LIMIT + 1):
        provider.place_call(dial(f"+1212556{index:04d}"))
    with pytest.raises(ProviderError) as unknown:
        provider.find_call("+12125550001", [CALLER], since)
    assert unknown.value.ambiguous  # looked up again later, never taken as absent
