"""Concurrency slots: how many calls may be live at once, per batch and per workspace.

A slot is taken (in Redis, atomically for every limit) before a call is dialed and given back
when the call ends. Each slot is a lease: a call whose final callback never comes frees its
slot when the lease runs out, and the tick reconciles that call with the provider.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any

import redis

from shared import ratelimit
from shared.settings import get_settings

# The script's parts. KEYS: the first ``slot_count`` are sorted sets of call ids scored by
# lease expiry. ARGV (from ``s0`` on): the call id, now, the lease's expiry, then one limit per
# key. CHECK drops expired leases and finds whether a limit is reached (``full``) and whether
# the call already holds every slot (``held`` 2, else 1); TAKE takes (or renews) them.
_CHECK = """
local held = slot_count > 0 and 2 or 1
local full = false
for i = 1, slot_count do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[s0 + 2])
  if not redis.call('ZSCORE', KEYS[i], ARGV[s0 + 1]) then
    held = 1
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[s0 + 3 + i]) then
      full = true
      break
    end
  end
end
"""
_TAKE = """
for i = 1, slot_count do
  redis.call('ZADD', KEYS[i], ARGV[s0 + 3], ARGV[s0 + 1])
  redis.call('EXPIRE', KEYS[i], math.ceil(tonumber(ARGV[s0 + 3]) - tonumber(ARGV[s0 + 2])) + 60)
end
"""
# Returns 0 when a limit is reached (nothing taken), else 1, or 2 when the call already held
# every slot (its lease is renewed).
_ACQUIRE = f"""
local slot_count, s0 = #KEYS, 0
{_CHECK}
if full then
  return 0
end
{_TAKE}
return held
"""
# The slots and a pacing reservation (``ratelimit``) together, or neither. ARGV[1]: the number
# of slot keys; then the slots' arguments, then the reservation's (whose keys follow the
# slots'). Returns {0, 0, 0} when a limit is reached, {0, minus the wait, choice} when the
# reservation would be too far away (nothing taken either), else {held, wait µs, choice}.
_ACQUIRE_AND_RESERVE = f"""
local slot_count, s0 = tonumber(ARGV[1]), 1
local k0, a0 = slot_count, 4 + slot_count
{_CHECK}
if full then
  return {{0, 0, 0}}
end
{ratelimit.PLAN}
if too_far then
  return {{0, now - at, choice}}
end
{ratelimit.TAKE}
{_TAKE}
return {{held, at - now, choice}}
"""


class Acquired(IntEnum):
    """What ``acquire`` did: nothing (a limit is reached; or, with a pacing reservation, that
    is too far away), took the slots, or found them already held by the same call (another
    delivery of its dial message holds them)."""

    NONE = 0
    TAKEN = 1
    ALREADY_HELD = 2


@dataclass(frozen=True)
class SlotLimit:
    """At most ``limit`` live calls under ``key``."""

    key: str
    limit: int


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, max_connections=256)


@lru_cache(maxsize=4)
def _script(url: str) -> Any:
    return _client(url).register_script(_ACQUIRE)


@lru_cache(maxsize=4)
def _paced_script(url: str) -> Any:
    return _client(url).register_script(_ACQUIRE_AND_RESERVE)


def _key(name: str) -> str:
    return f"{get_settings().redis_key_prefix}slots:{name}"


def _keys_and_args(
    call_id: str, limits: Sequence[SlotLimit], lease_s: float
) -> tuple[list[str], list[Any]]:
    """The slot keys and arguments of the scripts' CHECK and TAKE parts."""
    now = time.time()
    keys = [_key(limit.key) for limit in limits]
    return keys, [call_id, now, now + lease_s, *[limit.limit for limit in limits]]


def acquire(call_id: str, limits: Sequence[SlotLimit], lease_s: float) -> Acquired:
    """Take a slot under every limit for ``call_id``, or none at all."""
    if not limits:
        return Acquired.TAKEN
    keys, args = _keys_and_args(call_id, limits, lease_s)
    return Acquired(int(_script(get_settings().redis_url)(keys=keys, args=args)))


def acquire_and_reserve(
    call_id: str,
    limits: Sequence[SlotLimit],
    lease_s: float,
    pacing: Sequence[ratelimit.Limit],
    max_wait_s: float,
    alternatives: Sequence[ratelimit.Limit] = (),
) -> tuple[Acquired, ratelimit.Reservation | None]:
    """``acquire`` and ``ratelimit.reserve`` in one step, all or nothing: what was done with
    the slots, and the reservation. ``Acquired.NONE`` takes nothing: with no reservation, a
    limit is reached; with one that is not ``reserved``, the pacing slot is too far away."""
    slot_keys, slot_args = _keys_and_args(call_id, limits, lease_s)
    pace_keys, pace_args = ratelimit.keys_and_args(pacing, max_wait_s, alternatives)
    held, wait_us, choice = _paced_script(get_settings().redis_url)(
        keys=[*slot_keys, *pace_keys], args=[len(limits), *slot_args, *pace_args]
    )
    acquired = Acquired(int(held))
    if acquired is Acquired.NONE and int(wait_us) == 0:
        return acquired, None
    return acquired, ratelimit.reservation(wait_us, choice)


def taken(names: Sequence[str]) -> dict[str, int]:
    """How many slots are held (unexpired leases) under each of ``names``."""
    client = _client(get_settings().redis_url)
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(_key(name), f"({now}", "+inf")
        counts = pipe.execute()
    return {name: int(count) for name, count in zip(names, counts, strict=True)}


def release(call_id: str, names: Sequence[str]) -> None:
    """Give back the call's slots (harmless if it held none)."""
    release_many([(call_id, names)])


def release_many(held: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Give back the slots of several calls, in one round trip."""
    if not held:
        return
    client = _client(get_settings().redis_url)
    with client.pipeline(transaction=False) as pipe:
        for call_id, names in held:
            for name in names:
                pipe.zrem(_key(name), call_id)
        pipe.execute()
