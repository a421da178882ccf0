"""Pacing across every worker process: one atomic Redis script per dial (GCRA).

Each limited resource (a caller number, a provider account) is a key holding its theoretical
arrival time. A dial reserves the earliest moment at which every key it needs has a token,
and is told how long to wait for it; waiting never fails a call. A dial's first reservation
is made with its live-call slot, by ``slots.acquire_and_reserve`` (one script for both).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import live_state
from shared.settings import get_settings

# The script, in two parts that ``slots`` also runs after its own, in one script: the keys
# and arguments here start after the first ``k0`` keys and ``a0`` arguments.
# KEYS: first ARGV[2] alternatives (one of which is taken: the caller numbers of a pool), then
# the resources every dial needs (the provider account). ARGV[1]: the longest wait worth
# reserving (µs); ARGV[3]: where among the alternatives to start looking (a random offset, so
# an idle pool, whose keys are all free, rotates); then, per key, (emission interval µs, burst
# tolerance µs). PLAN picks the alternative whose slot comes first (ties: the one whose own
# slot is furthest in the past, then the first looked at): ``at`` and ``choice`` (its index,
# 0 without alternatives), and ``too_far`` when that slot is further away than ARGV[1]. TAKE
# advances every key the reservation needs.
PLAN = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local alternatives = tonumber(ARGV[a0 + 2])
local pace_count = #KEYS - k0
local tats = {}
local earliest = {}
for i = 1, pace_count do
  local tat = tonumber(redis.call('GET', KEYS[k0 + i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  earliest[i] = tat - tonumber(ARGV[a0 + 2 * i + 3])
end
local at = now
for i = alternatives + 1, pace_count do
  if earliest[i] > at then at = earliest[i] end
end
local choice = 0
if alternatives > 0 then
  local best, best_tat
  for k = 0, alternatives - 1 do
    local i = (tonumber(ARGV[a0 + 3]) + k) % alternatives + 1
    local candidate = math.max(at, earliest[i])
    if best == nil or candidate < best or (candidate == best and tats[i] < best_tat) then
      best, best_tat, choice = candidate, tats[i], i
    end
  end
  at = best
end
local too_far = at - now > tonumber(ARGV[a0 + 1])
"""
TAKE = """
for i = 1, pace_count do
  if i == choice or i > alternatives then
    local tat = tats[i]
    if tat < at then tat = at end
    local new_tat = tat + tonumber(ARGV[a0 + 2 * i + 2])
    redis.call('SET', KEYS[k0 + i], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  end
end
"""
# Returns {wait µs, choice} with every key it needs advanced atomically; or, when the slot is
# too far, {minus the wait, choice}, reserving nothing.
_RESERVE = f"""
local k0, a0 = 0, 0
{PLAN}
if too_far then
  return {{now - at, choice}}
end
{TAKE}
return {{at - now, choice}}
"""


@dataclass(frozen=True)
class Limit:
    """``rate`` per second on ``key``; no second may see more than ``rate + burst``."""

    key: str
    rate: float
    burst: int = 1


@dataclass(frozen=True)
class Reservation:
    """When the slot comes: ``wait_s`` after ``made_at`` (``time.monotonic()`` when the answer
    came); ``reserved`` is False when it was too far. ``choice`` is the index of the
    alternative taken (0 without alternatives)."""

    wait_s: float
    reserved: bool
    choice: int = 0
    made_at: float = field(default_factory=time.monotonic, compare=False)


def keys_and_args(
    limits: Sequence[Limit], max_wait_s: float, alternatives: Sequence[Limit] = ()
) -> tuple[list[str], list[int]]:
    """The script's keys and arguments for a reservation under every limit and under one of
    ``alternatives``, at most ``max_wait_s`` away."""
    settings = get_settings()
    ordered = [*alternatives, *limits]
    keys = [f"{settings.redis_key_prefix}rate:{limit.key}" for limit in ordered]
    args: list[int] = [
        int(max_wait_s * 1_000_000),
        len(alternatives),
        random.randrange(len(alternatives)) if alternatives else 0,
    ]
    for limit in ordered:
        interval = int(1_000_000 / limit.rate)
        # One call of the burst is kept as headroom for the jitter between a worker waking for
        # its slot and the request reaching the provider (measured: up to two calls in one
        # second with four workers on two cores), so the provider never sees more than
        # rate + burst in any one second.
        args += [interval, interval * max(limit.burst - 2, 0)]
    return keys, args


def reservation(wait_us: Any, choice: Any) -> Reservation:
    """The script's answer: the wait (negative when too far, nothing reserved) and the
    alternative's 1-based index."""
    wait = int(wait_us)
    return Reservation(abs(wait) / 1_000_000, wait >= 0, max(int(choice) - 1, 0))


def reserve(
    limits: Sequence[Limit], max_wait_s: float, alternatives: Sequence[Limit] = ()
) -> Reservation:
    """Reserve the next slot under every limit and under one of ``alternatives`` (the one
    whose slot comes first), unless it is more than ``max_wait_s`` away."""
    if not limits and not alternatives:
        return Reservation(0.0, True)
    keys, args = keys_and_args(limits, max_wait_s, alternatives)
    wait_us, choice = live_state.script(get_settings().redis_url, _RESERVE)(keys=keys, args=args)
    return reservation(wait_us, choice)
