"""Every URL we hand to a provider or to the voice-agent runtime is built here, and only here."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from shared.settings import Settings, get_settings

TWILIO_STATUS_PATH = "/v1/telephony/twilio/status/{call_id}"
TWILIO_TWIML_PATH = "/v1/telephony/twilio/twiml/{call_id}"
TWILIO_AMD_PATH = "/v1/telephony/twilio/amd/{call_id}"
AGENT_CONFIG_PATH = "/v1/voiceai/calls/{call_id}/agent-config"
AGENT_CONFIG_TTL_S = 6 * 3600


def _base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def twilio_status_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts the status events of a call, with our connection overrides (how
    Twilio resends a callback that failed) as its fragment."""
    settings = settings or get_settings()
    path = TWILIO_STATUS_PATH.format(call_id=call_id)
    return _base(settings) + path + twilio_callback_fragment(settings)


def twilio_amd_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts a call's answering machine detection verdict (AsyncAmd), with the
    same connection overrides as the status callbacks."""
    settings = settings or get_settings()
    path = TWILIO_AMD_PATH.format(call_id=call_id)
    return _base(settings) + path + twilio_callback_fragment(settings)


def twilio_callback_fragment(settings: Settings | None = None) -> str:
    """``#`` and Twilio's connection overrides, or nothing when none are configured."""
    overrides = (settings or get_settings()).twilio_callback_overrides.strip().lstrip("#")
    return f"#{overrides}" if overrides else ""


def twilio_twiml_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio fetches the TwiML a call starts with."""
    return _base(settings or get_settings()) + TWILIO_TWIML_PATH.format(call_id=call_id)


def public_url(path_and_query: str, settings: Settings | None = None) -> str:
    """The public URL of a request path, as a provider called it (for signature checks)."""
    return _base(settings or get_settings()) + path_and_query


def _agent_config_signature(call_id: str, expires: int, settings: Settings) -> str:
    message = f"{call_id}:{expires}".encode("utf-8", "surrogatepass")
    return hmac.new(settings.signing_secret.encode(), message, hashlib.sha256).hexdigest()


def agent_config_url(call_id: str, settings: Settings | None = None) -> str:
    """A signed, expiring URL at which the voice-agent runtime reads a call's rendered config."""
    settings = settings or get_settings()
    expires = int(time.time()) + AGENT_CONFIG_TTL_S
    query = urlencode(
        {"expires": expires, "signature": _agent_config_signature(call_id, expires, settings)}
    )
    return _base(settings) + AGENT_CONFIG_PATH.format(call_id=call_id) + "?" + query


def agent_config_signature_valid(
    call_id: str, expires: int, signature: str, settings: Settings | None = None
) -> bool:
    """Whether an agent-config URL was signed by us and has not expired."""
    settings = settings or get_settings()
    if expires < time.time():
        return False
    expected = _agent_config_signature(call_id, expires, settings)
    # As bytes: compare_digest refuses str with characters outside ASCII, which a forged
    # signature may hold.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass"))
