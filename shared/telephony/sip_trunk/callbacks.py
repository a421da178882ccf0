"""The SIP trunk's side of the callback endpoints (``/v1/telephony/sip_trunk/...``).

The calls are Twilio's (``provider.py``), so Twilio posts these callbacks, signed with the
environment's Twilio account, in Twilio's fields: the Twilio adapter verifies and reads them,
and a call that did not connect takes its outcome from the trunk's final answer
(``SipResponseCode``, ``responses.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from shared.lifecycle.plans import ProviderUpdate
from shared.settings import Settings, get_settings
from shared.telephony import twilio
from shared.telephony.port import DetectionVerdict
from shared.telephony.sip_trunk.responses import sip_code, with_sip_response
from shared.urls import MACHINE_DETECTION, STATUS, provider_url

NAME = "sip_trunk"
SIP_RESPONSE_CODE = "SipResponseCode"


def status_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts a trunk call's status events (with Twilio's connection overrides)."""
    settings = settings or get_settings()
    return provider_url(NAME, STATUS, call_id, settings) + twilio.urls.callback_fragment(settings)


def amd_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts a trunk call's answering machine detection verdict."""
    settings = settings or get_settings()
    fragment = twilio.urls.callback_fragment(settings)
    return provider_url(NAME, MACHINE_DETECTION, call_id, settings) + fragment


def twiml_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio fetches the TwiML a trunk call runs once answered."""
    return provider_url(NAME, twilio.urls.TWIML, call_id, settings)


class SipTrunkCallbacks:
    """Twilio's callbacks about trunk calls (``port.Callbacks``)."""

    name = NAME
    signature_header = twilio.SIGNATURE_HEADER
    answer_endpoint = twilio.urls.TWIML
    answer_document_name = "TwiML"

    def verify(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """Signed by Twilio, as any Twilio callback (the Twilio adapter checks it)."""
        return twilio.CALLBACKS.verify(url, params, headers)

    def status_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """Twilio's status, the outcome of a call that did not connect taken from the trunk's
        SIP response."""
        update = twilio.CALLBACKS.status_update(params)
        if update is None:
            return None
        return with_sip_response(update, sip_code(params.get(SIP_RESPONSE_CODE)))

    def detection_verdict(self, params: Mapping[str, str]) -> DetectionVerdict:
        """Twilio's machine-detection verdict."""
        return twilio.CALLBACKS.detection_verdict(params)

    def answer_document(self, call_id: str) -> tuple[str, str]:
        """Twilio's TwiML: the call's audio streamed to the voice-agent runtime, exactly as for
        a call to a phone number."""
        return twilio.CALLBACKS.answer_document(call_id)


CALLBACKS = SipTrunkCallbacks()
