"""The URLs we give Twilio for a call: its TwiML, its status callbacks and its machine-detection
callback (paths from ``shared.urls``), the callbacks with Twilio's connection overrides."""

from __future__ import annotations

from shared.settings import Settings, get_settings
from shared.urls import MACHINE_DETECTION, STATUS, provider_url

NAME = "twilio"
# Twilio fetches an answered call's TwiML here (the port's answer-document endpoint).
TWIML = "twiml"


def callback_fragment(settings: Settings | None = None) -> str:
    """``#`` and Twilio's connection overrides (how Twilio resends a callback that failed), or
    nothing when none are configured. A fragment is never sent in a request."""
    overrides = (settings or get_settings()).twilio_callback_overrides.strip().lstrip("#")
    return f"#{overrides}" if overrides else ""


def status_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts the status events of a call."""
    settings = settings or get_settings()
    return provider_url(NAME, STATUS, call_id, settings) + callback_fragment(settings)


def amd_callback_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio posts a call's answering machine detection verdict (AsyncAmd)."""
    settings = settings or get_settings()
    return provider_url(NAME, MACHINE_DETECTION, call_id, settings) + callback_fragment(settings)


def twiml_url(call_id: str, settings: Settings | None = None) -> str:
    """Where Twilio fetches the TwiML a call starts with."""
    return provider_url(NAME, TWIML, call_id, settings)
