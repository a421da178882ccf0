"""The Redis that holds the live state the limits keep (live-call slots, pacing budgets, webhook
admission): one client per URL in a process, and each Lua script registered on it once."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis


@lru_cache(maxsize=4)
def client(url: str) -> redis.Redis:
    """The process's client of the Redis at ``url`` (a pool shared by every thread)."""
    return redis.Redis.from_url(url, max_connections=256)


@lru_cache(maxsize=32)
def script(url: str, source: str) -> Any:
    """``source`` registered on ``client(url)``: called with ``keys`` and ``args``, it runs by
    its SHA, loading itself again after a Redis restart."""
    return client(url).register_script(source)
