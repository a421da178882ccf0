"""RabbitMQ as Celery's broker: each test runs a stack on a virtual host of its own (Redis still
paces and holds the live-call slots). RabbitMQ must be running: these tests fail without it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from amqp.exceptions import NotFound
from kombu import Connection, Producer

from shared.dispatch.fan_out import dial_groups
from tests.factories import recipients, submit
from tests.support import Stack, rabbitmq_vhost, wait_for
from tests.worker.test_dispatch import batch_state, dial_counts, setup_workspace, wait_final


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A virtual host of its own; requested before ``make_stack``, so it outlives the stack."""
    with rabbitmq_vhost() as url:
        yield url


def depth(broker_url: str, queue: str) -> int:
    """Messages ready in ``queue``, read as an operator would: a passive declare; -1 when the
    queue does not exist."""
    with Connection(broker_url, connect_timeout=5) as connection:
        try:
            return int(connection.channel().queue_declare(queue=queue, passive=True).message_count)
        except NotFound:
            return -1


def metric(stack: Stack, name: str, labels: str = "") -> float | None:
    """One sample of the API's /metrics, or None when it is not there."""
    text = httpx.get(stack.api_url + "/metrics", timeout=10).text
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_a_message_published_before_any_worker_is_delivered_and_the_broker_is_read(
    broker_url: str, make_stack: Any
) -> None:
    stack = make_stack(broker_url=broker_url, workers=0, beat=False)
    client, agent_id, number_id = setup_workspace(stack)
    ready = stack.raw_client().get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "ok", ready.text
    # Nothing has declared a queue on the new virtual host yet.
    assert depth(broker_url, "batch-control") == -1

    response = submit(client, agent_id, number_id, recipients(5, prefix="+1310555"))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    # The API declared the queue it published to: the start message waits there.
    assert depth(broker_url, "batch-control") == 1
    assert metric(stack, "switchboard_queue_depth", '{queue="batch-control"}') == 1
    assert metric(stack, "switchboard_queue_depth", '{queue="dial"}') == 0
    assert metric(stack, "switchboard_dead_lettered_messages") == 0

    stack.start_worker()
    stack.start_beat()
    batch = wait_final(client, batch_id, timeout=30)
    assert batch["total_calls_dispatched"] == 5
    counts = dial_counts(stack)
    assert len(counts) == 5 and set(counts.values()) == {1}

    # A message the worker refuses (no such task) is dead-lettered, not dropped, and the
    # metric counts it.
    with Connection(broker_url) as connection:
        Producer(connection.default_channel).publish(
            [[], {}, {}],
            exchange="",
            routing_key="status",
            headers={"task": "no.such.task", "id": "x1", "lang": "py"},
            serializer="json",
        )
    wait_for(
        lambda: metric(stack, "switchboard_dead_lettered_messages") == 1,
        15,
        what="the refused message in the dead-letter queue",
    )


def test_a_dial_backlog_is_not_published_again_while_it_waits(
    broker_url: str, make_stack: Any
) -> None:
    stack = make_stack(broker_url=broker_url, workers=0)
    # Batches start and ticks run, but nothing consumes the dial queue.
    stack.start_worker(name="control", queues="batch-control,status")
    client, agent_id, number_id = setup_workspace(stack)
    response = submit(client, agent_id, number_id, recipients(200, prefix="+1415555"))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    published = len(dial_groups([f"call_{i}" for i in range(200)]))  # 67 messages
    wait_for(
        lambda: depth(broker_url, "dial") == published,
        30,
        what=f"the batch's {published} dial messages",
    )
    # Ticks every second, and a re-drive after 3 s (the harness's SWITCHBOARD_REDRIVE_AFTER_S):
    # watch until every message has waited that long and two ticks have run since.
    depths: list[int] = []
    redrive_due = time.monotonic() + 3
    ticks: dict[str, set[str]] = {}

    def watched() -> bool:
        depths.append(depth(broker_url, "dial"))
        if time.monotonic() < redrive_due:
            return False
        if "earlier" not in ticks:
            ticks["earlier"] = stack.tick_ids()
        return stack.ticks_since(ticks["earlier"]) >= 2

    wait_for(watched, 30, interval=0.25, what="two ticks after the re-drive time")
    assert max(depths) == published, depths
    assert max(depths) <= 200  # never more messages than calls waiting
    assert metric(stack, "switchboard_queue_depth", '{queue="dial"}') == published
    assert batch_state(client, batch_id)["total_calls_dispatched"] == 0

    stack.start_worker(name="dialer", queues="dial")
    batch = wait_final(client, batch_id, timeout=40)
    assert batch["total_calls_dispatched"] == 200
    counts = dial_counts(stack)
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert depth(broker_url, "dial") == 0
