"""Public identifiers: a prefix, then a time-ordered 128-bit value, so newer ids sort later."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """A new id: prefix, 48-bit milliseconds, then 80 random bits, all hex."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{millis:012x}{os.urandom(10).hex()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` new ids sharing one timestamp read, in increasing order."""
    millis = time.time_ns() // 1_000_000
    randoms = sorted(os.urandom(10).hex() for _ in range(count))
    return [f"{prefix}_{millis:012x}{r}" for r in randoms]
