"""Pacing holds across worker processes: the carrier sees the configured rate, no more."""

from __future__ import annotations

import time

from tests.factories import recipients, submit
from tests.worker.test_dispatch import batch_state, setup_workspace

RATE = 10  # calls per second for the one caller number
BURST = 2
SECONDS = 60


def test_four_workers_dial_at_the_configured_rate_for_a_minute(make_stack):
    stack = make_stack(
        workers=4,
        concurrency=2,  # 8 dials in flight cover 10/s; fewer threads, less wake-up jitter
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": str(RATE),
            "SWITCHBOARD_PACING_BURST": str(BURST),
        },
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.05, "talk_seconds": 0.1}]},
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(RATE * (SECONDS + 20))).json()["id"]
    time.sleep(SECONDS + 8)
    client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    created = sorted(c["created_at"] for c in stack.carrier.calls())
    start = created[0] + 3  # past the start-up, measure a full minute
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
