"""Every URL we hand to a provider or to the voice-agent runtime is built from here: the paths of
our provider endpoints and their public URLs (a provider's adapter adds what its provider needs,
such as Twilio's connection overrides), and the signed agent-config URL."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from shared.settings import Settings, get_settings

# Every provider's callbacks come to /v1/telephony/{provider}/{endpoint}/{call_id}: its status
# callbacks at ``status``, its machine-detection verdicts at ``amd``, and the answer document at
# the endpoint its adapter names (Twilio's ``twiml``).
PROVIDER_PATH = "/v1/telephony/{provider}/{endpoint}/{call_id}"
STATUS = "status"
MACHINE_DETECTION = "amd"
# The document that speaks a voicemail message and ends the call, for providers that fetch it
# (``port.MessageDocuments``); the message is the ``text`` of its query.
MESSAGE = "message"
# The query parameter of a message document's URL that holds the text it speaks.
MESSAGE_TEXT = "text"
AGENT_CONFIG_PATH = "/v1/voiceai/calls/{call_id}/agent-config"
AGENT_CONFIG_TTL_S = 6 * 3600


def _base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def provider_path(provider: str, endpoint: str) -> str:
    """The path template (``{call_id}`` left in) of one of a provider's callback endpoints."""
    return PROVIDER_PATH.format(provider=provider, endpoint=endpoint, call_id="{call_id}")


def provider_url(
    provider: str, endpoint: str, call_id: str, settings: Settings | None = None
) -> str:
    """The public URL of a provider's callback endpoint for one call (the adapter adds what
    its provider needs, such as Twilio's connection overrides)."""
    path = PROVIDER_PATH.format(provider=provider, endpoint=endpoint, call_id=call_id)
    return _base(settings or get_settings()) + path


# Where Twilio posts status callbacks (bench/status_latency.py posts there too); the Twilio
# adapter builds its URLs in shared/telephony/twilio/urls.py.
TWILIO_STATUS_PATH = provider_path("twilio", STATUS)


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
