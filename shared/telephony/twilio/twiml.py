"""The TwiML documents we give Twilio: the one an answered call starts with, and the one that
replaces it on a call a machine answered."""

from __future__ import annotations

from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from shared.settings import Settings, get_settings
from shared.urls import agent_config_url

TWIML_MEDIA_TYPE = "application/xml"
_XML = '<?xml version="1.0" encoding="UTF-8"?>'


def connect_to_agent(call_id: str, settings: Settings | None = None) -> str:
    """The TwiML a call starts with: stream the audio to the voice-agent runtime."""
    settings = settings or get_settings()
    config_url = agent_config_url(call_id, settings)
    return (
        f"{_XML}<Response><Connect>"
        f"<Stream url={quoteattr(settings.voice_runtime_url)}>"
        f'<Parameter name="call_id" value={quoteattr(call_id)}/>'
        f'<Parameter name="agent_config_url" value={quoteattr(config_url)}/>'
        "</Stream></Connect></Response>"
    )


def say_and_hang_up(message: str) -> str:
    """TwiML that speaks ``message`` (when there is one) and ends the call."""
    say = f"<Say>{xml_escape(message)}</Say>" if message.strip() else ""
    return f"{_XML}<Response>{say}<Hangup/></Response>"
