"""Pacing across every worker process: one atomic Redis script per dial (GCRA).

Each limited resource (a caller number, a provider account) is a key holding its theoretical
arrival time. A dial reserves the earliest moment at which every key it needs has a token,
and is told how long to wait for it; waiting never fails a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis

from shared.settings import get_settings

# KEYS: the limited resources. ARGV[1]: the longest wait worth reserving (µs); then pairs of
# (emission interval µs, burst tolerance µs). Returns the wait in µs before the reserved slot,
# every key advanced atomically; or, when the slot is further away than ARGV[1], minus the
# wait, reserving nothing.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local at = now
local tats = {}
for i, key in ipairs(KEYS) do
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local earliest = tat - tolerance
  if earliest > at then at = earliest end
end
if at - now > tonumber(ARGV[1]) then
  return now - at
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if tat < at then tat = at end
  local new_tat = tat + interval
  redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return at - now
"""


@dataclass(frozen=True)
class Limit:
    """``rate`` per second on ``key``; no second may see more than ``rate + burst``."""

    key: str
    rate: float
    burst: int = 1


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, max_connections=256)


@lru_cache(maxsize=4)
def _script(url: str) -> Any:
    return _client(url).register_script(_RESERVE)


@dataclass(frozen=True)
class Reservation:
    """When the slot comes: ``wait_s`` from now; ``reserved`` is False when it was too far."""

    wait_s: float
    reserved: bool


def reserve(limits: Sequence[Limit], max_wait_s: float) -> Reservation:
    """Reserve the next slot under every limit, unless it is more than ``max_wait_s`` away."""
    if not limits:
        return Reservation(0.0, True)
    settings = get_settings()
    keys = [f"{settings.redis_key_prefix}rate:{limit.key}" for limit in limits]
    args: list[int] = [int(max_wait_s * 1_000_000)]
    for limit in limits:
        interval = int(1_000_000 / limit.rate)
        # One call of the burst is kept as headroom for the jitter between a worker waking for
        # its slot and the request reaching the provider (measured: up to two calls in one
        # second with four workers on two cores), so the provider never sees more than
        # rate + burst in any one second.
        args += [interval, interval * max(limit.burst - 2, 0)]
    wait_us = int(_script(settings.redis_url)(keys=keys, args=args))
    return Reservation(abs(wait_us) / 1_000_000, wait_us >= 0)
