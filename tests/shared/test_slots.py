"""Live-call slots and pacing reservations in one Redis script, on the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.limits import ratelimit, slots
from shared.limits.ratelimit import Limit
from shared.limits.slots import Acquired, SlotLimit
from shared.settings import get_settings

MAX_WAIT_S = 2.0


@pytest.fixture
def prefix(service_urls, monkeypatch) -> Iterator[str]:
    _, redis_url = service_urls
    prefix = f"slots-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SWITCHBOARD_REDIS_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}slots-whole", "1")  # the copy of the slots is whole, as after restore
    client.close()
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
    get_settings.cache_clear()


def _take(call_id: str, cap: int, per_second: float, numbers: int = 1):
    pool = [Limit(f"number:n{i}", per_second, 1) for i in range(numbers)]
    return slots.acquire_and_reserve(
        call_id,
        [SlotLimit("workspace:w", cap)],
        [Limit("account:a", 1000.0, 1)],
        MAX_WAIT_S,
        pool,
    )


def test_slot_and_pacing_are_taken_together(prefix):
    acquired, first = _take("c1", cap=5, per_second=1.0)
    assert acquired is Acquired.TAKEN and first.reserved and first.wait_s == 0
    acquired, second = _take("c2", cap=5, per_second=1.0)
    # The caller number's next slot is a second later; both calls hold a live-call slot.
    assert acquired is Acquired.TAKEN and second.reserved and 0.9 <= second.wait_s <= 1.0
    assert slots.taken(["workspace:w"]) == {"workspace:w": 2}
    # The same call again (another delivery of its message) finds its slot held.
    acquired, _ = _take("c1", cap=5, per_second=1.0)
    assert acquired is Acquired.ALREADY_HELD


def test_a_full_cap_takes_no_pacing_slot(prefix):
    assert _take("c1", cap=1, per_second=1.0)[0] is Acquired.TAKEN
    acquired, reservation = _take("c2", cap=1, per_second=1.0)
    assert acquired is Acquired.NONE and reservation is None
    assert slots.taken(["workspace:w"]) == {"workspace:w": 1}
    # c2 reserved nothing: the number's next slot is still one interval after c1's.
    wait = ratelimit.reserve([], MAX_WAIT_S, [Limit("number:n0", 1.0, 1)]).wait_s
    assert 0.9 <= wait <= 1.0


def test_a_pacing_slot_too_far_away_takes_no_live_call_slot(prefix):
    for i in range(3):  # at one call a second, the fourth slot is three seconds away
        assert _take(f"c{i}", cap=10, per_second=1.0)[1].reserved
    acquired, late = _take("c3", cap=10, per_second=1.0)
    assert acquired is Acquired.NONE and late is not None
    assert not late.reserved and late.wait_s > MAX_WAIT_S
    assert slots.taken(["workspace:w"]) == {"workspace:w": 3}


def test_a_pool_spreads_reservations_over_its_numbers(prefix):
    waits = [_take(f"c{i}", cap=10, per_second=1.0, numbers=3)[1] for i in range(3)]
    # Each number's first slot is now; only the account's own pace (1 ms here) spaces them.
    assert all(w.reserved and w.wait_s < 0.01 for w in waits)
    assert sorted(w.choice for w in waits) == [0, 1, 2]


def test_no_slot_is_taken_until_lost_slots_are_restored(prefix, service_urls):
    _, redis_url = service_urls
    client = redis.Redis.from_url(redis_url)
    assert _take("c1", cap=2, per_second=1000.0)[0] is Acquired.TAKEN
    # Redis restarted empty: the marker is gone with the slots.
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    assert _take("c2", cap=2, per_second=1000.0) == (Acquired.UNKNOWN, None)
    assert slots.acquire("c2", [SlotLimit("workspace:w", 2)]) is Acquired.UNKNOWN

    def read_live():
        return [("c1", ["workspace:w"]), ("c9", ["workspace:w"])]

    # c9 ended while the live calls were being read: the second look gives its slot back.
    assert slots.restore(read_live, lambda ids: {"c9"})
    assert not slots.restore(read_live, lambda ids: set())  # whole now: nothing to do
    assert slots.taken(["workspace:w"]) == {"workspace:w": 1}
    assert _take("c2", cap=2, per_second=1000.0)[0] is Acquired.TAKEN
    assert _take("c3", cap=2, per_second=1000.0)[0] is Acquired.NONE
    client.close()


def test_renewal_keeps_only_slots_still_held(prefix):
    assert _take("c1", cap=5, per_second=1000.0)[0] is Acquired.TAKEN
    slots.release("c2", ["workspace:w"])
    slots.renew([("c1", ["workspace:w"]), ("c2", ["workspace:w"])])
    # c2 had given its slot back (its call ended): a renewal does not bring it back.
    assert slots.taken(["workspace:w"]) == {"workspace:w": 1}
    assert slots.held_longer_than(0.0) == {"c1": ["workspace:w"]}
    assert slots.held_longer_than(60.0) == {}


def _with_account_cap(monkeypatch, cap: int) -> None:
    monkeypatch.setenv("SWITCHBOARD_MAX_LIVE_CALLS_PER_ACCOUNT", str(cap))
    get_settings.cache_clear()


def _take_as(call_id: str, workspace: str, account: str | None) -> Acquired:
    return slots.acquire(call_id, slots.slot_limits("b", workspace, account, None))


def test_each_provider_account_has_a_cap_of_its_own(prefix, monkeypatch):
    _with_account_cap(monkeypatch, 2)
    # Two workspaces on one account (the environment's, say) share its cap...
    assert _take_as("c1", "w1", "AC-env") is Acquired.TAKEN
    assert _take_as("c2", "w2", "AC-env") is Acquired.TAKEN
    assert _take_as("c3", "w2", "AC-env") is Acquired.NONE
    # ...while a connection of their own has a cap of its own.
    assert _take_as("c4", "w2", "conn_b") is Acquired.TAKEN
    assert _take_as("c5", "w1", "conn_b") is Acquired.TAKEN
    assert _take_as("c6", "w1", "conn_b") is Acquired.NONE
    held = slots.taken(["account:AC-env", "account:conn_b", "workspace:w1", "workspace:w2"])
    assert held == {"account:AC-env": 2, "account:conn_b": 2, "workspace:w1": 2, "workspace:w2": 2}
    # Another delivery of a call holding its slots finds them held, full as its account is.
    assert _take_as("c1", "w1", "AC-env") is Acquired.ALREADY_HELD
    slots.release("c1", slots.slot_names("b", "w1", "AC-env"))
    assert _take_as("c3", "w2", "AC-env") is Acquired.TAKEN
    assert slots.taken(["account:AC-env", "workspace:w1"]) == {
        "account:AC-env": 2,
        "workspace:w1": 1,
    }


def test_no_account_slot_is_held_without_an_account_cap(prefix):
    assert get_settings().max_live_calls_per_account == 0
    assert slots.slot_names("b", "w", "conn_a") == ["batch:b", "workspace:w"]
    assert [limit.key for limit in slots.slot_limits("b", "w", "conn_a", 3)] == [
        "workspace:w",
        "batch:b",
    ]


def test_a_call_holding_some_of_its_slots_fits_under_the_others_limits(prefix):
    workspace, account = SlotLimit("workspace:w", 5), SlotLimit("account:a", 1)
    # c1 took its workspace slot before the account had a cap; c9 holds the account's one.
    assert slots.acquire("c1", [workspace]) is Acquired.TAKEN
    assert slots.acquire("c9", [account]) is Acquired.TAKEN
    assert slots.acquire("c1", [workspace, account]) is Acquired.NONE
    slots.release("c9", ["account:a"])
    assert slots.acquire("c1", [workspace, account]) is Acquired.TAKEN
    assert slots.acquire("c1", [workspace, account]) is Acquired.ALREADY_HELD


def test_an_expired_lease_is_neither_counted_nor_held(prefix):
    limits = [SlotLimit("workspace:w", 1)]
    assert slots.acquire("c1", limits, lease=-1.0) is Acquired.TAKEN  # ran out at once
    assert slots.taken(["workspace:w"]) == {"workspace:w": 0}
    assert slots.acquire("c2", limits) is Acquired.TAKEN
    # c1's slot is gone: it fits no more than any other call would.
    assert slots.acquire("c1", limits) is Acquired.NONE


def test_restoring_lost_slots_rebuilds_the_account_slots(prefix, service_urls, monkeypatch):
    _with_account_cap(monkeypatch, 2)
    _, redis_url = service_urls
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):  # Redis restarted empty
        client.delete(key)
    live = {
        "c1": slots.slot_names("b1", "w1", "conn_a"),
        "c2": slots.slot_names("b2", "w2", "conn_a"),
        "c3": slots.slot_names("b3", "w2", "conn_b"),
    }
    assert _take_as("c4", "w1", "conn_b") is Acquired.UNKNOWN
    assert slots.restore(lambda: list(live.items()), lambda ids: set())
    held = slots.taken(["account:conn_a", "account:conn_b", "workspace:w1", "workspace:w2"])
    assert held == {"account:conn_a": 2, "account:conn_b": 1, "workspace:w1": 1, "workspace:w2": 2}
    # conn_a is full with calls of two workspaces; conn_b has one slot left.
    assert _take_as("c4", "w1", "conn_a") is Acquired.NONE
    assert _take_as("c4", "w1", "conn_b") is Acquired.TAKEN
    assert _take_as("c5", "w1", "conn_b") is Acquired.NONE
    client.close()


def test_the_audit_takes_the_expiry_off_slot_keys(prefix, service_urls):
    _, redis_url = service_urls
    client = redis.Redis.from_url(redis_url)
    assert slots.acquire("c1", [SlotLimit("workspace:w", 5)]) is Acquired.TAKEN
    key = f"{prefix}slots:workspace:w"
    assert client.ttl(key) == -1  # the claim gives its keys no expiry
    client.expire(key, 600)  # as an earlier version did
    assert slots.held_longer_than(0.0) == {"c1": ["workspace:w"]}
    assert client.ttl(key) == -1
    client.close()
