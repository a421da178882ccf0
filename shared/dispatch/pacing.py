"""Pacing: a dial waits for its slot under the provider account's and its caller number's
calls-per-second limits, shared by every worker through Redis."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from shared import metrics
from shared.db import Transaction
from shared.dispatch.fence import Fence, stop_claim
from shared.dispatch.results import DialResult
from shared.lifecycle.plans import RunState
from shared.lifecycle.store import ClaimedCall
from shared.lifecycle.transitions import hand_back
from shared.limits.ratelimit import Limit, Reservation, reserve
from shared.settings import get_settings
from shared.telephony import registry

log = logging.getLogger(__name__)


# A call whose pacing could not be reserved (Redis unreachable) is handed back, due again
# after this long. A dial the provider did not process (429, 5xx, unreachable) is handed back
# after a delay that grows with its batch's run of them, and pauses the batch once that run
# is long enough (shared/provider_outage.py).
TRANSIENT_RETRY_DELAY_S = 15.0

# A dial paced a second or more away reads its batch's status this long before its slot:
PACING_CHECK_LEAD_S = 0.5

# A dial that wakes later than this after its pacing slot takes a new slot (at most
# PACING_ATTEMPTS slots; then the call is handed back, due at once):
PACING_LATE_S = 0.05
PACING_ATTEMPTS = 4


def pacing_limits(
    provider: str | None, credentials_ref: str | None, callers: list[str]
) -> tuple[list[Limit], list[Limit]]:
    """The pacing limits a dial takes a slot under: the account's of the caller number's
    provider, and one of the caller numbers' (the pool of alternatives) when numbers are
    paced."""
    settings = get_settings()
    account = registry.provider_for(provider, credentials_ref).pacing_key
    per_number = settings.per_number_pacing
    pool = (
        [Limit(f"number:{number}", per_number, settings.pacing_burst) for number in callers]
        if per_number
        else []
    )
    limits = [
        Limit(f"account:{account}", settings.calls_per_second_per_account, settings.pacing_burst),
    ]
    return limits, pool


@dataclass(frozen=True, slots=True)
class Paced:
    """A dial's pacing: the index of the caller number to dial from, now that its slot has
    come, or (``stopped``) what happened instead."""

    caller: int = 0
    stopped: DialResult | None = None


def wait_for_pacing(
    call_id: str,
    row: ClaimedCall,
    token: str,
    callers: list[str],
    first: Reservation | None,
    fence: Fence,
    transaction: Transaction,
) -> Paced:
    """Take a pacing slot for one of the batch's caller numbers (the one free first) and for
    the provider account, shared by every worker through Redis (``first``, when it was taken
    with the call's live-call slot); the caller number to dial from once the slot has come,
    or what happened instead.

    A slot further away than ``max_pacing_sleep_s`` is not taken: the call goes back to
    pending, due then, rather than holding a worker thread.
    """
    settings = get_settings()
    for _ in range(PACING_ATTEMPTS):
        try:
            if first is not None:
                reservation, first = first, None
            else:
                limits, pool = pacing_limits(row.provider, row.credentials_ref, callers)
                reservation = reserve(limits, settings.max_pacing_sleep_s, alternatives=pool)
        except RedisError as exc:
            # Nothing was placed: hand the call back, due shortly, rather than dial unpaced.
            log.warning("pacing unavailable for %s: %s", call_id, exc)
            with transaction() as session:
                hand_back(session, call_id, token, TRANSIENT_RETRY_DELAY_S)
            return Paced(stopped=DialResult.PACING_UNAVAILABLE)
        if not reservation.reserved:
            metrics.PACING_HANDED_BACK.inc()
            with transaction() as session:
                hand_back(session, call_id, token, reservation.wait_s)
            return Paced(stopped=DialResult.PACED)
        metrics.PACING_WAIT_SECONDS.observe(reservation.wait_s)
        slot_at = reservation.made_at + reservation.wait_s
        if reservation.wait_s >= 1.0:
            # The batch may have been cancelled or paused during a long wait: read its status
            # shortly before the slot (the fence moves on to this read), so that the read's
            # own delay never makes the dial late. Shorter waits are covered by the fence as
            # it stands; right before the request it is read again if too little is left.
            time.sleep(max(slot_at - PACING_CHECK_LEAD_S - time.monotonic(), 0.0))
            state = fence.check()
            if state is not RunState.RUNNING:
                return Paced(stopped=stop_claim(call_id, token, state, transaction))
        remaining = slot_at - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        # A thread that woke well after its slot (a busy machine) would send right before the
        # next slot's call and crowd the provider's second: it lets the slot go and takes the
        # next free one instead.
        if time.monotonic() - slot_at <= PACING_LATE_S:
            return Paced(caller=caller_index(reservation, len(callers)))
    with transaction() as session:
        hand_back(session, call_id, token, 0)
    return Paced(stopped=DialResult.PACED_LATE)


def caller_index(reservation: Reservation, callers: int) -> int:
    """Which caller number of the pool to dial from: the one whose pacing slot was taken, or,
    when numbers are not paced, any of them (so the calls spread over the pool)."""
    if get_settings().per_number_pacing or callers < 2:
        return reservation.choice
    return random.randrange(callers)
