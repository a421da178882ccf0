"""Concurrency slots: how many calls may be live at once, per batch, per workspace and per
provider account.

A slot is taken (in Redis, atomically for every limit) before a call is dialed and given back
when the call ends. Each slot is a lease sized to the longest call (``lease_s``): a call whose
end is never heard of frees its slot when the lease runs out; the tick looks such a call up at
the provider long before that, and renews the lease of a call found still live.

The slots are a copy of what PostgreSQL knows (every ``dialing`` or live call holds one), kept
in Redis for speed. A marker key says the copy is whole: Redis restarted empty has none, and
then no slot is taken (the scripts answer ``Acquired.UNKNOWN``) until the copy is rebuilt from
PostgreSQL (``restore``, which the calls service runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis

from shared import live_state
from shared.limits import ratelimit
from shared.settings import get_settings

# The script's parts. KEYS: the marker (the copy is whole), then ``slot_count`` sorted sets of
# call ids scored by lease expiry. ARGV (from ``s0`` on): the call id, now, the lease's expiry,
# then one limit per key. CHECK counts the unexpired leases and finds whether a limit is
# reached (``full``) and whether the call already holds every slot (``held`` 2, else 1); TAKE
# takes (or renews) them. A call's slots are taken together, with one lease, and given back
# together: so the first key alone says whether the call holds them, and the others are looked
# up only when it does. Expired leases are not counted; they stay in their set until the call
# gives them back or the audit does (``held_longer_than``): a set emptied is no key, so the
# keys need no expiry, and each slot costs the claim three commands (ZSCORE or ZCOUNT, ZADD,
# and the release's ZREM).
_CHECK = """
local held = slot_count > 0 and 2 or 1
local full = false
local function holds(i)
  local score = redis.call('ZSCORE', KEYS[1 + i], ARGV[s0 + 1])
  return score and tonumber(score) > tonumber(ARGV[s0 + 2])
end
local mine = slot_count > 0 and holds(1)
for i = 1, slot_count do
  if not (mine and (i == 1 or holds(i))) then
    held = 1
    if redis.call('ZCOUNT', KEYS[1 + i], '(' .. ARGV[s0 + 2], '+inf')
        >= tonumber(ARGV[s0 + 3 + i]) then
      full = true
      break
    end
  end
end
"""
_TAKE = """
for i = 1, slot_count do
  redis.call('ZADD', KEYS[1 + i], ARGV[s0 + 3], ARGV[s0 + 1])
end
"""
# Returns -1 when the copy is not whole (nothing taken), 0 when a limit is reached (nothing
# taken), else 1, or 2 when the call already held every slot (its lease is renewed).
_ACQUIRE = f"""
local slot_count, s0 = #KEYS - 1, 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
{_CHECK}
if full then
  return 0
end
{_TAKE}
return held
"""
# The slots and a pacing reservation (``ratelimit``) together, or neither. ARGV[1]: the number
# of slot keys; then the slots' arguments, then the reservation's (whose keys follow the
# slots'). Returns {-1, 0, 0} when the copy is not whole, {0, 0, 0} when a limit is reached,
# {0, minus the wait, choice} when the reservation would be too far away (nothing taken in
# any of these), else {held, wait µs, choice}.
_ACQUIRE_AND_RESERVE = f"""
local slot_count, s0 = tonumber(ARGV[1]), 1
local k0, a0 = 1 + slot_count, 4 + slot_count
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {{-1, 0, 0}}
end
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
    """What ``acquire`` did: nothing because the copy of the slots in Redis is not whole (it
    must be restored first), nothing (a limit is reached; or, with a pacing reservation, that
    is too far away), took the slots, or found them already held by the same call (another
    delivery of its dial message holds them)."""

    UNKNOWN = -1
    NONE = 0
    TAKEN = 1
    ALREADY_HELD = 2


@dataclass(frozen=True)
class SlotLimit:
    """At most ``limit`` live calls under ``key``."""

    key: str
    limit: int


def _key(name: str) -> str:
    return f"{get_settings().redis_key_prefix}slots:{name}"


def _marker() -> str:
    return f"{get_settings().redis_key_prefix}slots-whole"


def _restoring() -> str:
    return f"{get_settings().redis_key_prefix}slots-restoring"


# The longest a call may ring (Twilio's largest Timeout); the lease covers it.
LONGEST_RING_S = 600


def lease_s() -> float:
    """How long a slot is leased for: the longest ring and the longest call, with the grace a
    final callback is given. A call that lives longer is found live by a lookup, which renews
    its lease."""
    settings = get_settings()
    return LONGEST_RING_S + settings.max_call_duration_s + settings.callback_grace_s


def _keys_and_args(
    call_id: str, limits: Sequence[SlotLimit], lease: float
) -> tuple[list[str], list[Any]]:
    """The slot keys and arguments of the scripts' CHECK and TAKE parts."""
    now = time.time()
    keys = [_marker(), *[_key(limit.key) for limit in limits]]
    return keys, [call_id, now, now + lease, *[limit.limit for limit in limits]]


def acquire(call_id: str, limits: Sequence[SlotLimit], lease: float | None = None) -> Acquired:
    """Take a slot under every limit for ``call_id``, or none at all."""
    if not limits:
        return Acquired.TAKEN
    keys, args = _keys_and_args(call_id, limits, lease_s() if lease is None else lease)
    return Acquired(
        int(live_state.script(get_settings().redis_url, _ACQUIRE)(keys=keys, args=args))
    )


def acquire_and_reserve(
    call_id: str,
    limits: Sequence[SlotLimit],
    pacing: Sequence[ratelimit.Limit],
    max_wait_s: float,
    alternatives: Sequence[ratelimit.Limit] = (),
) -> tuple[Acquired, ratelimit.Reservation | None]:
    """``acquire`` and ``ratelimit.reserve`` in one step, all or nothing: what was done with
    the slots, and the reservation. ``Acquired.NONE`` takes nothing: with no reservation, a
    limit is reached; with one that is not ``reserved``, the pacing slot is too far away.
    ``Acquired.UNKNOWN`` (no reservation) takes nothing either: restore the copy first."""
    slot_keys, slot_args = _keys_and_args(call_id, limits, lease_s())
    pace_keys, pace_args = ratelimit.keys_and_args(pacing, max_wait_s, alternatives)
    held, wait_us, choice = live_state.script(get_settings().redis_url, _ACQUIRE_AND_RESERVE)(
        keys=[*slot_keys, *pace_keys], args=[len(limits), *slot_args, *pace_args]
    )
    acquired = Acquired(int(held))
    if acquired is Acquired.UNKNOWN or (acquired is Acquired.NONE and int(wait_us) == 0):
        return acquired, None
    return acquired, ratelimit.reservation(wait_us, choice)


def taken(names: Sequence[str]) -> dict[str, int]:
    """How many slots are held (unexpired leases) under each of ``names``."""
    client = live_state.client(get_settings().redis_url)
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
    client = live_state.client(get_settings().redis_url)
    with client.pipeline(transaction=False) as pipe:
        for call_id, names in held:
            for name in names:
                pipe.zrem(_key(name), call_id)
        pipe.execute()


def whole() -> bool:
    """Whether the copy of the slots in Redis is whole (it was restored since Redis started)."""
    return bool(live_state.client(get_settings().redis_url).exists(_marker()))


# How long one restore may hold its lock: longer than reading the live calls takes.
RESTORE_LOCK_S = 30


def restore(
    read_live: Callable[[], Sequence[tuple[str, Sequence[str]]]],
    read_ended: Callable[[Sequence[str]], Collection[str]],
) -> bool:
    """Rebuild the slots from PostgreSQL when the copy in Redis is not whole; True when this
    call rebuilt it (False when it was whole, or another process is rebuilding it).

    ``read_live`` gives every call that holds a slot (``dialing`` or live) with its slot
    names; ``read_ended`` says which of some calls are no longer so. Until the marker is set
    no slot can be taken, so no new claim happens while the live calls are read; a call that
    ends meanwhile gives its slot back before it is added here, so the calls read are checked
    again once the marker is set, and those that ended lose the slot given them.
    """
    client = live_state.client(get_settings().redis_url)
    if client.exists(_marker()):
        return False
    if not client.set(_restoring(), "1", nx=True, ex=RESTORE_LOCK_S):
        return False
    try:
        live = read_live()
        _lease(client, live, only_held=False, then_mark_whole=True)
        ended = read_ended([call_id for call_id, _ in live])
        release_many([(call_id, names) for call_id, names in live if call_id in ended])
        return True
    finally:
        client.delete(_restoring())


def renew(held: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Extend the leases of calls known to be live (added again if they were lost)."""
    if held:
        # Only a slot still held: one given back meanwhile (the call ended) stays so.
        _lease(live_state.client(get_settings().redis_url), held, only_held=True)


def _lease(
    client: redis.Redis,
    held: Sequence[tuple[str, Sequence[str]]],
    only_held: bool,
    then_mark_whole: bool = False,
) -> None:
    """Give each call a full lease on its slots, in one round trip."""
    expiry = time.time() + lease_s()
    with client.pipeline(transaction=False) as pipe:
        for call_id, names in held:
            for name in names:
                pipe.zadd(_key(name), {call_id: expiry}, xx=only_held)
        if then_mark_whole:
            pipe.set(_marker(), str(time.time()))
        pipe.execute()


def held_longer_than(age_s: float, limit: int = 10_000) -> dict[str, list[str]]:
    """Call ids holding a slot taken (or renewed) more than ``age_s`` ago, with the slot
    names they hold, read from every slot key (for an audit against PostgreSQL)."""
    client = live_state.client(get_settings().redis_url)
    prefix = _key("")
    before = time.time() - age_s + lease_s()
    found: dict[str, list[str]] = {}
    for key in client.scan_iter(match=prefix + "*", count=500):
        # Slot keys have no expiry (the claim no longer renews one): a key an earlier version
        # gave one must not vanish under the slots taken since.
        client.persist(key)
        name = key.decode()[len(prefix) :]
        members: list[Any] = client.zrangebyscore(key, "-inf", f"({before}", 0, limit)
        for member in members:
            found.setdefault(member.decode(), []).append(name)
    return found


def audit_due(interval_s: float) -> bool:
    """True at most once per ``interval_s`` across every process: whose turn it is to audit."""
    client = live_state.client(get_settings().redis_url)
    key = f"{get_settings().redis_key_prefix}slots-audited"
    return bool(client.set(key, "1", nx=True, ex=max(int(interval_s), 1)))


def _account_slot(account: str | None) -> str | None:
    """The slot name of a provider account's live calls (``account`` its pacing key), when
    ``max_live_calls_per_account`` caps them."""
    if account is None or not get_settings().max_live_calls_per_account:
        return None
    return f"account:{account}"


def slot_names(batch_id: str, workspace_id: str, account: str | None) -> list[str]:
    """The concurrency slots a call of this batch, dialed through ``account`` (its provider's
    pacing key, ``registry.account_key``), holds while it is live."""
    names = [f"batch:{batch_id}", f"workspace:{workspace_id}"]
    account_slot = _account_slot(account)
    return names if account_slot is None else [*names, account_slot]


def slot_limits(
    batch_id: str, workspace_id: str, account: str | None, target_concurrency_limit: int | None
) -> list[SlotLimit]:
    """The live-call limits a call of this batch must fit under: the workspace cap, the
    batch's target_concurrency_limit when it set one, and its provider account's cap when
    there is one."""
    settings = get_settings()
    limits = [SlotLimit(f"workspace:{workspace_id}", settings.max_live_calls_per_workspace)]
    if target_concurrency_limit:
        limits.append(SlotLimit(f"batch:{batch_id}", target_concurrency_limit))
    account_slot = _account_slot(account)
    if account_slot is not None:
        limits.append(SlotLimit(account_slot, settings.max_live_calls_per_account))
    return limits
