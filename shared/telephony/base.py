"""Compatibility names for the call sites written before the provider port
(``shared/telephony/port.py``). Remove once nothing imports this module."""

from __future__ import annotations

from shared.telephony.port import DialRequest as _DialRequest
from shared.telephony.port import PlacedCall, Provider
from shared.voicemail import MachineDetection

TelephonyProvider = Provider

__all__ = ["DialRequest", "PlacedCall", "TelephonyProvider"]


def DialRequest(
    *,
    call_id: str,
    to: str,
    from_: str,
    twiml_url: str | None = None,
    status_callback_url: str | None = None,
    ringing_timeout_s: int,
    time_limit_s: int,
    send_before: float | None = None,
    machine_detection: MachineDetection = MachineDetection.OFF,
    machine_detection_callback_url: str | None = None,
) -> _DialRequest:
    """The port's ``DialRequest``, from the fields it had before (``twiml_url`` is now the
    ``answer_url``)."""
    return _DialRequest(
        call_id=call_id,
        to=to,
        from_=from_,
        ringing_timeout_s=ringing_timeout_s,
        time_limit_s=time_limit_s,
        send_before=send_before,
        machine_detection=machine_detection,
        answer_url=twiml_url,
        status_callback_url=status_callback_url,
        machine_detection_callback_url=machine_detection_callback_url,
    )
