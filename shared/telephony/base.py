"""What the dispatcher needs from a telephony provider."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.lifecycle.plans import ProviderUpdate
from shared.voicemail import MachineDetection


@dataclass(frozen=True)
class DialRequest:
    """One outbound call to place."""

    call_id: str
    to: str
    from_: str
    twiml_url: str
    status_callback_url: str
    ringing_timeout_s: int
    # The provider ends an answered call at this length.
    time_limit_s: int
    # time.monotonic() by which the request must be on its way, else it is not sent at all
    # (ProviderError with ``fenced``): the dial's fence against a cancel or pause.
    send_before: float | None = None
    # Answering machine detection, always asynchronous: the call is connected at once, and the
    # verdict is posted to ``machine_detection_callback_url``.
    machine_detection: MachineDetection = MachineDetection.OFF
    machine_detection_callback_url: str | None = None


@dataclass(frozen=True)
class PlacedCall:
    """The provider accepted the call."""

    sid: str
    provider_status: str


class TelephonyProvider(Protocol):
    """A provider account able to place and look up calls."""

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Place the call; raise ProviderError when it was not (or may not have been) placed."""
        ...

    def find_call(
        self, to: str, callers: Sequence[str], since: datetime, exclude: Collection[str] = ()
    ) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` created at or after ``since``, if
        any, with the caller number it was placed from; never one whose SID is in ``exclude``
        (an earlier attempt's calls)."""
        ...

    def end_call(self, sid: str, answered: bool) -> ProviderUpdate | None:
        """Hang up a live call; its status as the provider then reports it."""
        ...

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The provider's current view of the call ``sid``."""
        ...

    def hang_up_on_machine(self, sid: str) -> None:
        """End the answered call ``sid``, which a machine answered, at once."""
        ...

    def leave_message(self, sid: str, message: str) -> None:
        """Speak ``message`` on the answered call ``sid`` (a machine recording it), then end
        the call."""
        ...
