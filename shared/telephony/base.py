"""What the dispatcher needs from a telephony provider."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.callstate import ProviderUpdate


@dataclass(frozen=True)
class DialRequest:
    """One outbound call to place."""

    call_id: str
    to: str
    from_: str
    twiml_url: str
    status_callback_url: str
    ringing_timeout_s: int


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

    def find_call(self, to: str, callers: Sequence[str], since: datetime) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` created at or after ``since``, if
        any, with the caller number it was placed from."""
        ...

    def end_call(self, sid: str, answered: bool) -> None:
        """Hang up a live call."""
        ...

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The provider's current view of the call ``sid``."""
        ...
