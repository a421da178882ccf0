"""The status callback URL carries Twilio's connection overrides as its fragment, which is
never sent: a signature over the URL as received, or over it with our fragment, is accepted."""

from __future__ import annotations

import pytest

from api import telephony
from shared.errors import Forbidden
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings, get_settings
from shared.telephony.twilio import CALLBACKS, request_signature
from shared.telephony.twilio.urls import status_callback_url

BASE = "https://switchboard.example.com"
PATH = "/v1/telephony/twilio/status/call_123"
FORM = {"AccountSid": SANDBOX_ACCOUNT_SID, "CallSid": "CA1", "CallStatus": "completed"}
OVERRIDES = "ct=2000&rt=5000&tt=15000&rc=5&rp=all"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = get_settings()
    monkeypatch.setattr(settings, "public_base_url", BASE)
    monkeypatch.setattr(settings, "twilio_account_sid", "")  # the sandbox's account
    monkeypatch.setattr(settings, "twilio_callback_overrides", OVERRIDES)
    return settings


def _check_signature(path: str, query: str, form: dict[str, str], signature: str) -> None:
    headers = {CALLBACKS.signature_header.lower(): signature}
    telephony._check_signature(CALLBACKS, path, query, form, headers)


def signed(url: str) -> str:
    return request_signature(SANDBOX_AUTH_TOKEN, url, FORM)


def test_the_status_callback_url_carries_the_overrides_unless_there_are_none(settings: Settings):
    assert status_callback_url("call_123", settings) == f"{BASE}{PATH}#{OVERRIDES}"
    settings.twilio_callback_overrides = ""
    assert status_callback_url("call_123", settings) == f"{BASE}{PATH}"


def test_a_signature_over_the_url_with_or_without_our_fragment_is_accepted(settings: Settings):
    _check_signature(PATH, "", FORM, signed(f"{BASE}{PATH}"))
    _check_signature(PATH, "", FORM, signed(f"{BASE}{PATH}#{OVERRIDES}"))


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}{PATH}#rc=1",  # another fragment than ours
        f"{BASE}/v1/telephony/twilio/status/call_999",  # another call
        f"{BASE}{PATH}#",
    ],
)
def test_a_signature_over_any_other_url_is_refused(settings: Settings, url: str):
    with pytest.raises(Forbidden):
        _check_signature(PATH, "", FORM, signed(url))


def test_without_overrides_a_signature_over_a_fragment_is_refused(settings: Settings):
    settings.twilio_callback_overrides = ""
    _check_signature(PATH, "", FORM, signed(f"{BASE}{PATH}"))
    with pytest.raises(Forbidden):
        _check_signature(PATH, "", FORM, signed(f"{BASE}{PATH}#{OVERRIDES}"))


def test_a_refusal_names_the_twilio_signature_header(settings: Settings):
    with pytest.raises(Forbidden) as refused:
        _check_signature(PATH, "", FORM, "")
    assert refused.value.detail()[0]["loc"] == ["header", "X-Twilio-Signature"]
    assert refused.value.detail()[0]["msg"] == "invalid Twilio signature"
