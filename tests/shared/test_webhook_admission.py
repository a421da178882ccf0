"""Webhook admission on the real Redis: in-flight limits per endpoint and per workspace, and
each endpoint's circuit breaker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.settings import get_settings
from shared.webhooks import admission as webhook_admission
from shared.webhooks.admission import COOL_DOWN_MAX_S, COOL_DOWN_MIN_S, Target, Verdict

LEASE_S = 25.0


@pytest.fixture(autouse=True)
def prefix(service_urls, monkeypatch) -> Iterator[str]:
    _, redis_url = service_urls
    prefix = f"admission-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SWITCHBOARD_REDIS_KEY_PREFIX", prefix)
    monkeypatch.setenv("SWITCHBOARD_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2")
    monkeypatch.setenv("SWITCHBOARD_WEBHOOK_MAX_IN_FLIGHT_PER_WORKSPACE", "4")
    monkeypatch.setenv("SWITCHBOARD_WEBHOOK_BREAKER_FAILURES", "5")
    get_settings.cache_clear()
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
    get_settings.cache_clear()


def _target(delivery: str, endpoint: str = "e1", workspace: str = "w1") -> Target:
    return Target(delivery, endpoint, workspace)


def _admit(target: Target, now: float) -> Verdict:
    return webhook_admission.admit(target, LEASE_S, now=now).verdict


def _release(target: Target, answered: bool | None, now: float) -> webhook_admission.Released:
    return webhook_admission.release(target, answered=answered, now=now)


def _fail(endpoint: str, times: int, now: float) -> float | None:
    """``times`` attempts to ``endpoint`` without an answer; when the last opened its breaker,
    the time it closes."""
    opened = None
    for i in range(times):
        target = _target(f"fail-{uuid.uuid4().hex[:6]}-{i}", endpoint)
        assert _admit(target, now) is Verdict.ADMITTED
        opened = _release(target, False, now).opened_until
    return opened


def test_an_endpoint_takes_two_deliveries_at_once_and_hands_a_freed_slot_on():
    now = time.time()
    first, second, third, fourth = (_target(f"d{i}") for i in range(4))
    assert _admit(first, now) is Verdict.ADMITTED
    assert _admit(second, now) is Verdict.ADMITTED
    # Not held in a thread, and not due later: it waits for a slot to be handed on.
    refused = webhook_admission.admit(third, LEASE_S, now=now)
    assert refused.verdict is Verdict.ENDPOINT_BUSY and refused.retry_at is None
    assert _admit(fourth, now + 0.1) is Verdict.ENDPOINT_BUSY
    # Another message of a delivery being sent finds its leases taken by itself.
    assert _admit(first, now) is Verdict.ALREADY_HELD
    # The freed slot goes to the one that waited longest, then to the next.
    assert _release(first, True, now + 1).woken == ["d2"]
    assert _admit(third, now + 1) is Verdict.ADMITTED
    assert _release(second, True, now + 1).woken == ["d3"]
    assert _release(third, True, now + 1).woken == []


def test_a_workspace_takes_four_deliveries_at_once_and_others_are_not_held_back():
    now = time.time()
    held = [_target(f"d{i}", endpoint=f"e{i}") for i in range(4)]
    for target in held:
        assert _admit(target, now) is Verdict.ADMITTED
    assert _admit(_target("d4", endpoint="e4"), now) is Verdict.WORKSPACE_BUSY
    assert _admit(_target("other", endpoint="e9", workspace="w2"), now) is Verdict.ADMITTED
    assert _release(held[0], False, now).woken == ["d4"]


def test_a_slot_not_taken_is_handed_on_to_the_next_waiting():
    now = time.time()
    # e1 is busy with two; two more of w1 (on e2 and e3) take the workspace's other slots.
    busy = [_target(f"busy{i}") for i in range(2)]
    others = [_target(f"other{i}", endpoint=f"e{i + 2}") for i in range(2)]
    for target in busy + others:
        assert _admit(target, now) is Verdict.ADMITTED
    assert _admit(_target("on-e1"), now) is Verdict.ENDPOINT_BUSY
    assert _admit(_target("on-e4", endpoint="e4"), now + 0.1) is Verdict.WORKSPACE_BUSY
    assert _admit(_target("on-e5", endpoint="e5"), now + 0.2) is Verdict.WORKSPACE_BUSY
    # A slot of the workspace frees: it goes to on-e4 ...
    assert _release(others[0], True, now + 1).woken == ["on-e4"]
    # ... whose endpoint, say, has just become busy: it waits there, and hands the slot on.
    for i in range(2):
        assert _admit(_target(f"e4-{i}", endpoint="e4", workspace="w2"), now + 1) is (
            Verdict.ADMITTED
        )
    refused = webhook_admission.admit(_target("on-e4", endpoint="e4"), LEASE_S, now=now + 1)
    assert refused.verdict is Verdict.ENDPOINT_BUSY and refused.woken == ["on-e5"]
    assert _admit(_target("on-e5", endpoint="e5"), now + 1) is Verdict.ADMITTED


def test_leases_of_a_dead_worker_run_out():
    now = time.time()
    assert _admit(_target("d0"), now) is Verdict.ADMITTED
    assert _admit(_target("d1"), now) is Verdict.ADMITTED
    assert _admit(_target("d2"), now + 1) is Verdict.ENDPOINT_BUSY
    # Never released: the leases end on their own.
    assert _admit(_target("d2"), now + LEASE_S + 1) is Verdict.ADMITTED
    assert _admit(_target("d0"), now + LEASE_S + 1) is Verdict.ADMITTED


def test_the_breaker_opens_after_five_attempts_without_an_answer():
    now = time.time()
    assert _fail("e1", 4, now) is None
    assert _admit(_target("d"), now) is Verdict.ADMITTED
    opened = _release(_target("d"), False, now).opened_until
    assert opened == pytest.approx(now + COOL_DOWN_MIN_S, abs=0.01)
    refused = webhook_admission.admit(_target("later"), LEASE_S, now=now + 1)
    # Due again when the breaker closes, and no lease taken.
    assert refused.verdict is Verdict.BREAKER_OPEN
    assert refused.retry_at == pytest.approx(now + COOL_DOWN_MIN_S, abs=0.01)
    # Other endpoints of the workspace are untouched.
    assert _admit(_target("elsewhere", endpoint="e2"), now + 1) is Verdict.ADMITTED


def test_any_answer_resets_the_count():
    now = time.time()
    assert _fail("e1", 4, now) is None
    answered = _target("an-error-status")
    assert _admit(answered, now) is Verdict.ADMITTED
    assert _release(answered, True, now).opened_until is None
    assert _fail("e1", 4, now) is None
    assert _admit(_target("still-closed"), now) is Verdict.ADMITTED


def test_one_probe_decides_and_the_cool_down_doubles_up_to_ten_minutes():
    now = time.time()
    closes = _fail("e1", 5, now)
    assert closes is not None
    cool_downs = []
    for round_ in range(7):
        probe, waiting = _target(f"probe{round_}"), _target(f"waiting{round_}")
        assert _admit(probe, closes) is Verdict.ADMITTED
        # While the probe is out, the others wait for it, without a lease.
        assert _admit(waiting, closes) is Verdict.PROBING
        released = _release(probe, False, closes)
        assert released.opened_until is not None
        # The waiting one is published again, to learn that the breaker is open again.
        assert released.woken == [waiting.delivery_id]
        assert _admit(waiting, closes) is Verdict.BREAKER_OPEN
        cool_downs.append(round(released.opened_until - closes))
        closes = released.opened_until
    assert cool_downs == [60, 120, 240, 480, 600, 600, 600]
    assert COOL_DOWN_MAX_S == 600
    probe = _target("good-probe")
    assert _admit(probe, closes) is Verdict.ADMITTED
    assert _release(probe, True, closes).opened_until is None
    # Closed again: deliveries go as usual, and the cool-down starts over next time.
    assert _admit(_target("after"), closes) is Verdict.ADMITTED
    assert _fail("e1", 5, closes + 1) == pytest.approx(closes + 1 + COOL_DOWN_MIN_S, abs=0.01)


def test_a_probe_not_sent_after_all_leaves_the_probe_to_another():
    now = time.time()
    closes = _fail("e1", 5, now)
    assert closes is not None
    probe = _target("probe")
    assert _admit(probe, closes) is Verdict.ADMITTED
    _release(probe, None, closes)
    assert _admit(_target("next-probe"), closes) is Verdict.ADMITTED
