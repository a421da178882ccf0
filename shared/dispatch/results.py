"""What dispatch's steps report: one enum per step. The values are the Prometheus labels and
the task results the logs and tests read, so they never change."""

from __future__ import annotations

from enum import StrEnum


class DialResult(StrEnum):
    """What became of one call of a dial message."""

    DISPATCHED = "dispatched"
    # Not claimed: another delivery, a cancel or a later due time got there first.
    NOT_CLAIMED = "not_claimed"
    # Left pending, unclaimed: no live-call slot free, or its pacing slot too far away.
    NO_SLOT = "no_slot"
    PACED = "paced"
    # Handed back after the claim: pacing unavailable (Redis), or woke too late too often.
    PACING_UNAVAILABLE = "pacing_unavailable"
    PACED_LATE = "paced_late"
    # The gates (shared/dispatch/gates.py).
    WHATSAPP_UNSUPPORTED = "whatsapp_unsupported"
    DNC = "dnc"
    UNKNOWN_TIME_ZONE = "unknown_time_zone"
    WINDOW_NEVER_OPENS = "window_never_opens"
    OUTSIDE_WINDOW = "outside_window"
    OVER_FREQUENCY_CAP = "over_frequency_cap"
    # The fence: the batch stopped running before the request went out.
    CANCELLED = "cancelled"
    PAUSED = "paused"
    # The provider's errors (shared/dispatch/dial_errors.py).
    AUTH_FAILED = "auth_failed"
    FENCED = "fenced"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"
    PROVIDER_UNREACHABLE = "provider_unreachable"
    DEFERRED = "deferred"


class ReconcileResult(StrEnum):
    """What reconciling a call with its provider did."""

    NOTHING_TO_DO = "nothing_to_do"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    UPDATED = "updated"
    HANG_UP = "hang_up"
    LIVE = "live"
    REDIAL = "redial"
    UNCHANGED = "unchanged"


class HangUpResult(StrEnum):
    """What ending a live call through its provider did."""

    NOTHING_TO_DO = "nothing_to_do"
    ENDED = "ended"
    UNKNOWN = "unknown"
    RECONCILED = "reconciled"


class MachineResult(StrEnum):
    """What was done about an answering machine's verdict."""

    NOTHING_TO_DO = "nothing_to_do"
    NOT_DONE = "not_done"
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"
