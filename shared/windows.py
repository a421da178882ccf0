"""Calling windows: when a recipient may be called, in the recipient's local time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones

UNKNOWN_ZONE = "Etc/Unknown"
ALL_DAYS = frozenset(range(7))


def parse_clock(text: str) -> time:
    """``HH:MM`` or ``HH:MM:SS``; ``24:00`` is the end of the day."""
    parts = [int(p) for p in text.split(":")] + [0]
    if parts[0] == 24 and not any(parts[1:]):
        return time.max
    return time(parts[0], parts[1], parts[2])


@dataclass(frozen=True)
class CallingWindow:
    """Calls may start on ``days`` (0 = Monday) between ``start`` and ``end`` (local time)."""

    start: time
    end: time
    days: frozenset[int] = ALL_DAYS
    timezone: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallingWindow:
        """A window as the API and the batch row carry it."""
        return cls(
            start=parse_clock(data["start"]),
            end=parse_clock(data["end"]),
            days=frozenset(data.get("days") or ALL_DAYS),
            timezone=data.get("timezone"),
        )

    @classmethod
    def from_spec(cls, spec: str) -> CallingWindow:
        """A window written ``08:00-21:00`` (settings)."""
        start, end = spec.split("-")
        return cls(start=parse_clock(start), end=parse_clock(end))

    def contains(self, moment: datetime, zone: str) -> bool:
        """Whether ``moment`` is inside the window in ``zone``."""
        local = moment.astimezone(ZoneInfo(zone))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def within(self, other: CallingWindow) -> bool:
        """Whether this window never allows a call that ``other`` forbids (same zone)."""
        return self.start >= other.start and self.end <= other.end and self.days <= other.days

    def next_opening(self, now: datetime, zones: list[str]) -> datetime | None:
        """The first moment from ``now`` at which every zone is inside the window (8 days)."""
        if all(self.contains(now, zone) for zone in zones):
            return now  # most dials: no later opening needs to be looked for
        candidates = {now}
        for zone in zones:
            local_today = now.astimezone(ZoneInfo(zone)).date()
            for offset in range(9):
                day = local_today + timedelta(days=offset)
                opening = datetime.combine(day, self.start, tzinfo=ZoneInfo(zone))
                if opening >= now:
                    candidates.add(opening.astimezone(UTC))
        for moment in sorted(candidates):
            if all(self.contains(moment, zone) for zone in zones):
                return moment
        return None


def recipient_zones(number: str, window: CallingWindow, batch_timezone: str | None) -> list[str]:
    """The time zones a window is applied in for ``number``; empty when none is known.

    The window's own zone wins; otherwise every zone the number's prefix may be in (a call is
    placed only when all of them are inside the window), or the batch's zone for a number with
    no known zone.
    """
    if window.timezone:
        return [window.timezone]
    zones = [
        z
        for z in phone_timezones.time_zones_for_number(phonenumbers.parse(number))
        if z != UNKNOWN_ZONE
    ]
    if zones:
        return zones
    return [batch_timezone] if batch_timezone else []
