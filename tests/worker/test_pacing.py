"""Pacing holds across worker processes: the carrier sees the configured rate, no more."""

from __future__ import annotations

import collections

from tests.factories import recipients, register_number, submit
from tests.support import wait_for
from tests.worker.test_dispatch import batch_state, dial_counts, setup_workspace, wait_final

# Calls per second for the one caller number: a few times Twilio's default of 1, low enough
# that a loaded two-core machine's scheduling delays (a few hundred milliseconds at worst)
# cannot pass for a burst: six calls in one second would need 670 ms of them.
RATE = 3
BURST = 2
SECONDS = 20


def test_four_workers_dial_at_the_configured_rate_for_twenty_seconds(make_stack):
    stack = make_stack(
        workers=4,
        concurrency=2,  # 8 dials in flight; fewer threads, less wake-up jitter
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": str(RATE),
            "SWITCHBOARD_PACING_BURST": str(BURST),
        },
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.05, "talk_seconds": 0.1}]},
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(RATE * (SECONDS + 20))).json()["id"]

    def dialed_for(seconds: float) -> bool:
        created = [c["created_at"] for c in stack.carrier.calls()]
        return bool(created) and max(created) - min(created) >= seconds

    wait_for(lambda: dialed_for(SECONDS + 4), SECONDS + 30, what="the measured span of dials")
    client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    created = sorted(c["created_at"] for c in stack.carrier.calls())
    start = created[0] + 3  # past the start-up, measure SECONDS in full
    window = [t for t in created if start <= t < start + SECONDS]
    observed = len(window) / SECONDS
    busiest = max(
        sum(1 for u in created[i : i + 3 * (RATE + BURST)] if u < t + 1)
        for i, t in enumerate(created)
    )
    print(
        f"pacing: {observed:.2f} calls/s observed for a limit of {RATE}/s; "
        f"busiest one-second window {busiest} calls (burst {BURST})"
    )
    assert abs(observed - RATE) <= 0.05 * RATE
    assert busiest <= RATE + BURST
    assert batch_state(client, batch_id)["status"] == "cancelled"


def test_caller_pool_rotates_numbers_each_at_its_own_pace(make_stack):
    per_number, pool_size, count = 2, 3, 36
    stack = make_stack(
        workers=2,
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": str(per_number),
            "SWITCHBOARD_PACING_BURST": "1",
        },
    )
    client, agent_id, first = setup_workspace(stack)
    others = [register_number(client, f"+1202555010{i}") for i in range(1, pool_size)]
    response = submit(
        client, agent_id, first, recipients(count, "+1646555", 2600), agent_phone_number_ids=others
    )
    assert response.status_code == 200, response.text
    batch = wait_final(client, response.json()["id"], timeout=90)
    assert batch["status"] == "completed"
    placed = stack.carrier.calls()
    by_caller = collections.Counter(c["from"] for c in placed)
    print(f"caller pool: calls per number {dict(by_caller)}")
    assert len(placed) == count and len(by_caller) == pool_size
    assert min(by_caller.values()) >= count // pool_size - 3
    for caller in by_caller:
        times = sorted(c["created_at"] for c in placed if c["from"] == caller)
        busiest = max(sum(1 for u in times[i:] if u < t + 1) for i, t in enumerate(times))
        assert busiest <= per_number + 1, (caller, busiest)
    # The pool dials faster than any one number could.
    span = max(c["created_at"] for c in placed) - min(c["created_at"] for c in placed)
    assert span < (count - 1) / per_number * 0.6
    # Each recipient records the number its call came from.
    sent_from = {c["to"]: c["from"] for c in placed}
    assert all(r["caller_number"] == sent_from[r["phone_number"]] for r in batch["recipients"])


def test_an_idle_caller_pool_spreads_its_calls(stack):
    # Far under every number's pace, each number is free for every dial: ties are broken from
    # a random starting point, so no number takes all the calls.
    client, agent_id, first = setup_workspace(stack)
    others = [register_number(client, f"+1202555010{i}") for i in range(1, 3)]
    batch_id = submit(
        client, agent_id, first, recipients(60, "+1646555", 3400), agent_phone_number_ids=others
    ).json()["id"]
    wait_final(client, batch_id, timeout=60)
    placed = [c for c in stack.carrier.calls() if c["to"].startswith("+164655534")]
    by_caller = collections.Counter(c["from"] for c in placed)
    assert len(placed) == 60 and len(by_caller) == 3
    assert min(by_caller.values()) >= 8, by_caller


def test_a_call_whose_pacing_slot_is_too_far_waits_unclaimed_and_is_dialed_once(make_stack):
    # Two calls a second from one number, and no dial may wait more than half a second for
    # its slot: most of the 10 calls find their slot too far, take neither it nor a live-call
    # slot, go back to pending unclaimed, due when it comes, and are published again.
    count, rate = 10, 2
    stack = make_stack(
        concurrency=8,
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": str(rate),
            "SWITCHBOARD_PACING_BURST": "1",
            "SWITCHBOARD_MAX_PACING_SLEEP_S": "0.5",
        },
    )
    client, agent_id, number_id = setup_workspace(stack)
    people = recipients(count, "+1646555", 3700)
    batch = wait_final(client, submit(client, agent_id, number_id, people).json()["id"], 90)
    assert batch["status"] == "completed"
    assert batch["total_calls_dispatched"] == count and batch["retry_count"] == 0
    counts = dial_counts(stack)
    assert sorted(counts) == sorted(p["phone_number"] for p in people)
    assert set(counts.values()) == {1}
    assert "'paced'" in (stack.log_dir / "worker0.log").read_text()
    times = sorted(c["created_at"] for c in stack.carrier.calls())
    busiest = max(sum(1 for u in times[i:] if u < t + 1) for i, t in enumerate(times))
    assert busiest <= rate + 1
