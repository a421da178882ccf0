"""The dial's fence against cancel and pause: a provider request goes out only within a short
window after its batch was last seen running."""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.batches import repository as batches_repo
from shared.db import Transaction
from shared.dispatch.results import DialResult
from shared.lifecycle.plans import RunState
from shared.lifecycle.states import Outcome
from shared.lifecycle.transitions import hand_back, skip_claimed_call

# The dial's fence against cancel and pause: a provider request goes out only within this
# long of the last moment its batch was seen running (the claim, or a later read), else the
# batch is read again first (when less than FENCE_REFRESH_S of the window is left) or the
# request is not sent at all. A cancel or pause answers only DIAL_FENCE_S after it committed,
# so no request can go out after the answer: one sent later would need a read of the batch
# made after the commit, which sees it stopped.
DIAL_SEND_WINDOW_S = 0.75
FENCE_REFRESH_S = 0.25
DIAL_FENCE_S = 1.0


@dataclass
class Fence:
    """When a dial last saw its batch running (``time.monotonic()`` taken before the read)."""

    batch_id: str
    seen_running_at: float

    @property
    def send_before(self) -> float:
        """The moment after which the dial's request may not be sent."""
        return self.seen_running_at + DIAL_SEND_WINDOW_S

    def check(self) -> RunState:
        """Read the batch now: running (the fence moves on), or why not."""
        started = time.monotonic()
        state = batches_repo.run_state_now(self.batch_id)
        if state is RunState.RUNNING:
            self.seen_running_at = started
        return state

    def fresh(self) -> RunState:
        """Running while the window has time left, else ``check()``."""
        if time.monotonic() < self.send_before - FENCE_REFRESH_S:
            return RunState.RUNNING
        return self.check()


def stopped_before_dial(
    call_id: str, token: str, fence: Fence, transaction: Transaction
) -> DialResult | None:
    """None when the batch was seen running recently enough for the request to go out within
    the fence; else the claim is undone as the batch's state says: ``cancelled``, or
    ``paused`` (handed back, due at once, for when it resumes)."""
    state = fence.fresh()
    if state is RunState.RUNNING:
        return None
    return stop_claim(call_id, token, state, transaction)


def stop_claim(call_id: str, token: str, state: RunState, transaction: Transaction) -> DialResult:
    """Undo the claim of a call whose batch stopped running (``state``, as the fence read
    it): cancelled ends it; otherwise (paused, failed) it is handed back, due at once, and
    ends with a failed batch or waits for a paused one to resume."""
    with transaction() as session:
        if state is RunState.CANCELLED:
            skip_claimed_call(session, call_id, Outcome.BATCH_CANCELLED)
            return DialResult.CANCELLED
        hand_back(session, call_id, token, 0)
    return DialResult.PAUSED
