"""What a batch does about dials its provider did not process: when the next try is due, and
when to stop trying and pause.

A dial the provider did not process (connection refused or timed out, a 5xx, a 429) placed
nothing and is safe to send again. A batch's run of such dials starts with the first of them
(``batches.first_unreachable_at``) and ends with a dial the provider accepts. During the run
a failed call is due again after the time the run has lasted so far, between a base and a cap
(so the tries of a batch space out exponentially: 15 s, 15 s, 30 s, 60 s, 120 s, ...), never
past the moment the run reaches its bound; a dial failing at or after that bound pauses the
batch with the reason ``provider_unreachable``.
"""

from __future__ import annotations

from dataclasses import dataclass

PAUSED_MANUALLY = "manual"
PAUSED_PROVIDER_UNREACHABLE = "provider_unreachable"


@dataclass(frozen=True)
class UnreachableVerdict:
    """Pause the batch (the call waits, due at once, for the resume), or try the call again
    after ``retry_in_s``."""

    pause: bool
    retry_in_s: float = 0.0


def unreachable_verdict(
    unreachable_for_s: float, base_s: float, cap_s: float, pause_after_s: float
) -> UnreachableVerdict:
    """For a dial the provider did not process, ``unreachable_for_s`` after the first of its
    batch's run: pause once the run has lasted ``pause_after_s``; else retry after the run's
    length so far, at least ``base_s``, at most ``cap_s``, and no later than the bound."""
    elapsed = max(unreachable_for_s, 0.0)
    if elapsed >= pause_after_s:
        return UnreachableVerdict(pause=True)
    backoff = min(max(elapsed, base_s), cap_s)
    return UnreachableVerdict(pause=False, retry_in_s=min(backoff, pause_after_s - elapsed))
