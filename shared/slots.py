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

from shared.settings import get_settings

# KEYS: sorted sets of call ids scored by lease expiry. ARGV[1]: the call id, ARGV[2]: now,
# ARGV[3]: lease expiry, then one limit per key. Returns 0 when a limit is reached (nothing
# taken), else 1, or 2 when the call already held every slot (its lease is renewed).
_ACQUIRE = """
local held = 2
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
  if not redis.call('ZSCORE', key, ARGV[1]) then
    held = 1
    if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
      return 0
    end
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[3], ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[3]) - tonumber(ARGV[2])) + 60)
end
return held
"""


class Acquired(IntEnum):
    """What ``acquire`` did: nothing (a limit is reached), took the slots, or found them
    already held by the same call (another delivery of its dial message holds them)."""

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


def _key(name: str) -> str:
    return f"{get_settings().redis_key_prefix}slots:{name}"


def acquire(call_id: str, limits: Sequence[SlotLimit], lease_s: float) -> Acquired:
    """Take a slot under every limit for ``call_id``, or none at all."""
    if not limits:
        return Acquired.TAKEN
    now = time.time()
    args: list[Any] = [call_id, now, now + lease_s, *[limit.limit for limit in limits]]
    taken = _script(get_settings().redis_url)(keys=[_key(limit.key) for limit in limits], args=args)
    return Acquired(int(taken))


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
