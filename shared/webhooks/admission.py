"""Whether a webhook delivery may be sent now: per-endpoint circuit breakers and in-flight
limits per endpoint and per workspace, shared by every webhooks worker through Redis.

A delivery is admitted (it then holds a lease in its endpoint's and its workspace's sets of
deliveries in flight, given back when its attempt ends or, if its worker dies, when the lease
runs out), or it is not, and no attempt is spent:

* its endpoint's breaker is open: it is due again when the breaker closes (``retry_at``);
* its endpoint or its workspace already has its limit of deliveries in flight, or another
  delivery is the one probe of a breaker that has just closed: it waits in the endpoint's or
  the workspace's waiting set, and whoever gives back a lease there hands the freed slot on:
  ``release`` (and ``admit``, when the delivery it was asked about does not take a free slot)
  returns the ids to publish again. The tick's re-drive of deliveries published long ago is
  the backstop for a hand-off that was lost.

The breaker counts attempts that got no answer: the name did not resolve, the connection
failed, or the receiver did not answer within the timeouts. It opens after
``webhook_breaker_failures`` of them in a row, for a cool-down that starts at
``COOL_DOWN_MIN_S`` and doubles on every failed probe up to ``COOL_DOWN_MAX_S``. Any answer,
an error status included, closes it and forgets the count: a receiver that answers costs one
quick request per attempt, and its deliveries keep their own backoff. The state lives in Redis
only: losing it (Redis restarted empty) costs a few attempts to a receiver that is still down,
and leaves waiting deliveries to the tick's re-drive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from shared import live_state
from shared.settings import get_settings

COOL_DOWN_MIN_S = 30.0
COOL_DOWN_MAX_S = 600.0
# How long a closed breaker remembers failures, and an open one its cool-down, once idle; and
# how long a waiting set outlives its last delivery.
_BREAKER_MEMORY_S = 24 * 3600
_WAITING_MEMORY_S = 3600

# Shared by both scripts. KEYS: the endpoint's breaker (a hash); the endpoint's and the
# workspace's sets of deliveries in flight (sorted sets of delivery ids scored by lease
# expiry); the endpoint's and the workspace's waiting sets (scored by when they began to wait).
# ARGV: the delivery id, now, the endpoint's limit, the workspace's limit, how long a waiting
# set outlives its last addition.
_COMMON = """
local id, now = ARGV[1], tonumber(ARGV[2])
local limits = {0, tonumber(ARGV[3]), tonumber(ARGV[4])}
local woken = {}
local function free(i)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  return limits[i] - redis.call('ZCARD', KEYS[i])
end
local function wake(i, n)
  if n <= 0 then
    return
  end
  local popped = redis.call('ZPOPMIN', KEYS[i + 2], n)
  for j = 1, #popped, 2 do
    woken[#woken + 1] = popped[j]
  end
end
local function wait(i)
  redis.call('ZADD', KEYS[i + 2], 'NX', now, id)
  redis.call('EXPIRE', KEYS[i + 2], tonumber(ARGV[5]))
end
"""

# ARGV beyond the common: the lease's expiry. Returns
# {verdict, until, ids to publish again...}: verdict 0 admitted, 1 open until ``until``,
# 2 probing, 3 the endpoint's limit is reached, 4 the workspace's, 5 this delivery already
# holds its leases (another message of it is being sent).
_ADMIT = (
    _COMMON
    + """
local expiry = tonumber(ARGV[6])
local function refused(verdict, at)
  -- A free slot of the workspace this delivery does not take goes to one that waits for it.
  if verdict ~= 4 then
    wake(3, math.min(free(3), 1))
  end
  return {verdict, tostring(at), unpack(woken)}
end
-- Leases run out first: a dead worker's lease no longer counts, nor holds its delivery.
free(2)
free(3)
if redis.call('ZSCORE', KEYS[2], id) or redis.call('ZSCORE', KEYS[3], id) then
  return {5, '0'}
end
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > now then
  -- Left to the database until then; those waiting for the endpoint learn it is open, one
  -- after another.
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  wake(2, 1)
  return refused(1, open_until)
end
local half_open = open_until > 0
if half_open and tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0') > now then
  wait(2)
  return refused(2, 0)
end
if free(2) <= 0 then
  wait(2)
  return refused(3, 0)
end
if free(3) <= 0 then
  wait(3)
  return refused(4, 0)
end
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], expiry, id)
  redis.call('EXPIRE', KEYS[i], math.ceil(expiry - now) + 60)
  redis.call('ZREM', KEYS[i + 2], id)
end
if half_open then
  redis.call('HSET', KEYS[1], 'probe', id, 'probe_until', expiry)
end
return {0, '0'}
"""
)

# ARGV beyond the common: the outcome (1 answered, 0 no answer, -1 not attempted), the failures
# that open the breaker, the first and the longest cool-down, how long an idle breaker is
# remembered. Gives back the delivery's leases and hands the freed slots on; returns {when the
# breaker opened by this failure closes or '0', ids to publish again...}.
_RELEASE = (
    _COMMON
    + """
local outcome = tonumber(ARGV[6])
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
local opened = '0'
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if outcome == 1 then
  redis.call('DEL', KEYS[1])
elseif outcome == -1 then
  if redis.call('HGET', KEYS[1], 'probe') == id then
    redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  end
elseif open_until <= now then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
  if open_until > 0 or failures >= tonumber(ARGV[7]) then
    local cool_down = tonumber(redis.call('HGET', KEYS[1], 'cool_down') or '0')
    if cool_down == 0 then
      cool_down = tonumber(ARGV[8])
    else
      cool_down = math.min(cool_down * 2, tonumber(ARGV[9]))
    end
    opened = tostring(now + cool_down)
    redis.call('HSET', KEYS[1], 'open_until', opened, 'cool_down', cool_down, 'failures', 0)
    redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  end
end
wake(2, free(2))
wake(3, free(3))
return {opened, unpack(woken)}
"""
)


# Deliveries just written wait in their workspace's waiting set, and as many as it has free
# slots are taken out to be published now. KEYS: the workspace's set of deliveries in flight
# and its waiting set. ARGV: now, the workspace's limit, how long the waiting set is kept, then
# the delivery ids. Returns the ids to publish.
_ENQUEUE = """
local now = tonumber(ARGV[1])
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i])
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local woken = {}
if free > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], free)
  for j = 1, #popped, 2 do
    woken[#woken + 1] = popped[j]
  end
end
return woken
"""

# A delivery published again that turns out not to be due (sent meanwhile by another message)
# hands the slots it was woken for on. KEYS and ARGV as the common part's.
_HAND_ON = (
    _COMMON
    + """
wake(2, free(2))
wake(3, free(3))
return woken
"""
)
_ENQUEUE_CHUNK = 1000


class Verdict(IntEnum):
    """What ``admit`` decided."""

    ADMITTED = 0
    BREAKER_OPEN = 1
    PROBING = 2
    ENDPOINT_BUSY = 3
    WORKSPACE_BUSY = 4
    ALREADY_HELD = 5


@dataclass(frozen=True)
class Admission:
    """The verdict; when the breaker is open, the Unix time it closes; and the deliveries to
    publish again (a slot this one does not take was handed on to them)."""

    verdict: Verdict
    retry_at: float | None = None
    woken: list[str] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMITTED


@dataclass(frozen=True)
class Released:
    """When the breaker this attempt opened closes (None: it opened none), and the deliveries
    to publish again (the freed slots were handed on to them)."""

    opened_until: float | None
    woken: list[str]


@dataclass(frozen=True)
class Target:
    """Where a delivery goes, for its leases and its endpoint's breaker."""

    delivery_id: str
    endpoint_id: str
    workspace_id: str


def _prefix() -> str:
    return f"{get_settings().redis_key_prefix}webhooks:"


def _keys(target: Target) -> list[str]:
    prefix = _prefix()
    return [
        f"{prefix}breaker:{target.endpoint_id}",
        f"{prefix}in-flight:endpoint:{target.endpoint_id}",
        f"{prefix}in-flight:workspace:{target.workspace_id}",
        f"{prefix}waiting:endpoint:{target.endpoint_id}",
        f"{prefix}waiting:workspace:{target.workspace_id}",
    ]


def _common_args(target: Target, now: float | None) -> list[Any]:
    settings = get_settings()
    return [
        target.delivery_id,
        time.time() if now is None else now,
        settings.webhook_max_in_flight_per_endpoint,
        settings.webhook_max_in_flight_per_workspace,
        _WAITING_MEMORY_S,
    ]


def _ids(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def admit(target: Target, lease_s: float, now: float | None = None) -> Admission:
    """Take the delivery's in-flight leases (endpoint and workspace) unless its endpoint's
    breaker is open, another delivery probes it, or a limit is reached (it then waits for a
    slot to be handed on)."""
    args = _common_args(target, now)
    admit_script = live_state.script(get_settings().redis_url, _ADMIT)
    verdict, until, *woken = admit_script(keys=_keys(target), args=[*args, args[1] + lease_s])
    outcome = Verdict(int(verdict))
    retry_at = float(until) if outcome is Verdict.BREAKER_OPEN else None
    return Admission(outcome, retry_at, _ids(woken))


def release(target: Target, answered: bool | None, now: float | None = None) -> Released:
    """Give back the delivery's leases, hand the freed slots on, and record on the endpoint's
    breaker whether its attempt got an answer (``None``: it was not attempted after all)."""
    release_script = live_state.script(get_settings().redis_url, _RELEASE)
    opened, *woken = release_script(
        keys=_keys(target),
        args=[
            *_common_args(target, now),
            -1 if answered is None else int(answered),
            get_settings().webhook_breaker_failures,
            COOL_DOWN_MIN_S,
            COOL_DOWN_MAX_S,
            _BREAKER_MEMORY_S,
        ],
    )
    return Released(float(opened) or None, _ids(woken))


def enqueue(workspace_id: str, delivery_ids: Sequence[str], now: float | None = None) -> list[str]:
    """Deliveries just written wait for their workspace's slots: those to publish now (as many
    as it has free), the others are published as slots are handed on."""
    settings = get_settings()
    enqueue_script = live_state.script(settings.redis_url, _ENQUEUE)
    prefix = _prefix()
    keys = [
        f"{prefix}in-flight:workspace:{workspace_id}",
        f"{prefix}waiting:workspace:{workspace_id}",
    ]
    now = time.time() if now is None else now
    woken: list[str] = []
    for start in range(0, len(delivery_ids), _ENQUEUE_CHUNK):
        chunk = delivery_ids[start : start + _ENQUEUE_CHUNK]
        args = [now, settings.webhook_max_in_flight_per_workspace, _WAITING_MEMORY_S, *chunk]
        woken += _ids(enqueue_script(keys=keys, args=args))
    return woken


def hand_on(target: Target, now: float | None = None) -> list[str]:
    """For a delivery that was published again but is not due: the deliveries to publish in
    its place, if its endpoint and workspace have free slots and others wait for them."""
    hand_on_script = live_state.script(get_settings().redis_url, _HAND_ON)
    return _ids(hand_on_script(keys=_keys(target), args=_common_args(target, now)))
