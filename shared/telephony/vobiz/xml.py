"""The VobizXML an answered call runs, built with the SDK's XML builder: its audio streamed to
the voice-agent runtime; and the one a call a machine answered is transferred to, which
speaks the voicemail message and hangs up."""

from __future__ import annotations

from shared.settings import Settings, get_settings
from shared.urls import agent_config_url

XML_MEDIA_TYPE = "application/xml"


def connect_to_agent(call_id: str, settings: Settings | None = None) -> str:
    """The VobizXML a call starts with: a bidirectional ``<Stream>`` of both legs' audio to the
    voice-agent runtime, kept up for the whole call, which learns the call and where to read
    its rendered configuration from the stream's extra headers."""
    from vobiz import vobizxml  # the SDK, at first use

    settings = settings or get_settings()
    config_url = agent_config_url(call_id, settings)
    stream = vobizxml.StreamElement(
        settings.voice_runtime_url,
        bidirectional=True,
        audioTrack="inbound",
        keepCallAlive=True,
        contentType="audio/x-mulaw;rate=8000",
        extraHeaders=f"call_id={call_id},agent_config_url={config_url}",
    )
    response = vobizxml.ResponseElement().add(stream)
    body: str = response.to_string(pretty=False)
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


def speak_and_hang_up(message: str) -> str:
    """VobizXML that speaks ``message`` (when there is one) and ends the call."""
    from vobiz import vobizxml  # the SDK, at first use

    response = vobizxml.ResponseElement()
    if message.strip():
        response.add_speak(message)
    body: str = response.add_hangup().to_string(pretty=False)
    return '<?xml version="1.0" encoding="UTF-8"?>' + body
