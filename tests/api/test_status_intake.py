"""Status callbacks on the real stack: a callback refused while the API is down is resent as
the status callback URL's connection overrides ask, and one the API acknowledged is applied
even when its message is lost, by the tick's re-drive from the status inbox."""

from __future__ import annotations

from collections import Counter

import redis

from shared.messaging import QUEUE_STATUS
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, wait_for

CALLS = 4


def start_batch(stack: Stack, prefix: str) -> str:
    client = stack.client(new_api_key(stack))
    response = submit(
        client, create_agent(client), register_number(client), recipients(CALLS, prefix)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def statuses(stack: Stack, batch_id: str) -> Counter[str]:
    rows = stack.sql("SELECT status FROM calls WHERE batch_id = %s", batch_id)
    return Counter(status for (status,) in rows)


def inbox_size(stack: Stack) -> int:
    return int(stack.sql("SELECT count(*) FROM status_inbox")[0][0])


def all_dispatched(stack: Stack, batch_id: str) -> bool:
    """Every call placed, its provider's answer recorded, and no callback applied yet."""
    return statuses(stack, batch_id)["dispatched"] == CALLS


def all_completed(stack: Stack, batch_id: str) -> bool:
    return statuses(stack, batch_id)["completed"] == CALLS


def test_callbacks_refused_while_the_api_is_down_are_resent_and_applied(make_stack):
    stack = make_stack(
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 4.0, "talk_seconds": 0.5}]},
        # Only the carrier's resends can bring these reports in.
        settings_env={"SWITCHBOARD_STATUS_INBOX_REDRIVE_AFTER_S": "3600"},
    )
    batch_id = start_batch(stack, "+1415557")
    # The calls ring for 4 s: long enough to act before their first callback.
    wait_for(
        lambda: all_dispatched(stack, batch_id),
        20,
        what="every call to be placed",
        describe=lambda: str(statuses(stack, batch_id)),
    )
    stack.kill("api")
    carrier = stack.carrier

    def ended_while_down() -> bool:
        stats = carrier.stats()
        return bool(
            stats["by_status"].get("completed") == CALLS and stats["callbacks_failed"] >= CALLS
        )

    wait_for(ended_while_down, 20, what="the calls to end while the API is down")
    assert carrier.stats()["callbacks_sent"] == 0
    stack.start_api()
    wait_for(
        lambda: all_completed(stack, batch_id),
        30,
        what="every call to be completed",
        describe=lambda: f"calls {statuses(stack, batch_id)}, carrier {carrier.stats()}",
    )
    stats = carrier.stats()
    assert stats["callbacks_failed_ct"] >= CALLS and stats["callbacks_resent"] >= CALLS
    assert stats["callbacks_lost"] == 0
    # The connection overrides rode on the status callback URL as its fragment.
    urls = {call["status_callback"] for call in carrier.calls()}
    assert all(url.endswith("#ct=2000&rt=5000&tt=15000&rc=5&rp=all") for url in urls)
    wait_for(lambda: inbox_size(stack) == 0, 10, what="the applied reports to leave the inbox")


def test_an_acknowledged_report_whose_message_is_lost_is_applied_by_the_tick(make_stack):
    stack = make_stack(
        embed_beat=False,
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 4.0, "talk_seconds": 0.5}]},
        settings_env={
            "SWITCHBOARD_STATUS_INBOX_REDRIVE_AFTER_S": "1",
            # No answering machine detection: each call's callbacks are exactly its answer and
            # its end (a detection verdict would be a third, at a moment of its own).
            "SWITCHBOARD_TWILIO_MACHINE_DETECTION": "",
        },
    )
    batch_id = start_batch(stack, "+1415558")
    # The calls ring for 4 s: long enough to act before their first callback.
    wait_for(
        lambda: all_dispatched(stack, batch_id),
        20,
        what="every call to be placed",
        describe=lambda: str(statuses(stack, batch_id)),
    )
    stack.kill("worker0")  # nobody takes the status messages now
    carrier = stack.carrier
    wait_for(
        lambda: carrier.stats()["callbacks_sent"] == 2 * CALLS,
        20,
        what="the answered and completed callbacks to be acknowledged",
        describe=lambda: str(carrier.stats()),
    )
    # Acknowledged: so in the inbox, whatever happens to their messages.
    assert inbox_size(stack) == 2 * CALLS
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        queue = stack.redis_prefix + QUEUE_STATUS
        assert broker.llen(queue) >= 1
        broker.delete(queue)  # the messages are lost, as when Redis restarts empty
    finally:
        broker.close()
    assert statuses(stack, batch_id)["dispatched"] == CALLS
    stack.start_worker(name="worker1")
    wait_for(
        lambda: all_completed(stack, batch_id),
        30,
        what="the tick to re-drive the reports and every call to be completed",
        describe=lambda: f"calls {statuses(stack, batch_id)}, inbox {inbox_size(stack)}",
    )
    wait_for(lambda: inbox_size(stack) == 0, 10, what="the applied reports to leave the inbox")
