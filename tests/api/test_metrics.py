"""GET /metrics on a real stack: gauges read at scrape time, and the workers' metrics collected
through the multiprocess directory the API and the workers share."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared import messaging
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, free_port, wait_for
from tests.worker.test_dispatch import _publish

REJECTED_NUMBER = "+16465551300"
REJECTING_CARRIER = {
    "rules": [
        {
            "pattern": REJECTED_NUMBER,
            "http_error": 400,
            "error_code": 21217,
            "error_message": "Phone number does not appear to be valid",
        }
    ]
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack) -> Samples:
    """Every sample of /metrics, by (sample name, labels)."""
    response = httpx.get(stack.api_url + "/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_completed(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    def completed() -> dict[str, Any] | None:
        batch = client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        return batch if batch["status"] == "completed" else None

    return dict(wait_for(completed, 60, interval=0.5, what=f"batch {batch_id} to complete"))


def test_metrics_show_calls_batches_queues_and_worker_dials(make_stack):
    stack = make_stack(sandbox=REJECTING_CARRIER, webhooks_worker=True, embed_beat=False)
    client = stack.client(new_api_key(stack))
    agent_id, number_id = create_agent(client), register_number(client)
    before = scrape(stack)
    assert value(before, "switchboard_batches", status="completed") == 0
    assert value(before, "switchboard_dials_total", result="dispatched") in (None, 0)

    # Five calls the carrier completes, one it refuses (400 / 21217).
    batch_recipients = recipients(5, "+1646555", 1301) + recipients(1, "+1646555", 1300)
    response = submit(client, agent_id, number_id, batch_recipients)
    assert response.status_code == 200, response.text
    wait_completed(client, response.json()["id"])
    # The worker records the dial before the task returns; the batch may complete (from the
    # carrier's callbacks) a moment earlier.
    wait_for(
        lambda: value(scrape(stack), "switchboard_dials_total", result="dispatched") == 5,
        10,
        what="five dispatched dials in /metrics",
    )
    samples = scrape(stack)

    (completed,) = stack.sql("SELECT count(*) FROM calls WHERE status = 'completed'")[0]
    assert completed == 5
    assert value(samples, "switchboard_calls", status="completed", outcome="answered") == 5
    assert value(samples, "switchboard_calls", status="failed", outcome="provider_error") == 1
    assert value(samples, "switchboard_batches", status="completed") == 1
    for status in ("pending", "in_progress", "failed", "cancelled"):
        assert value(samples, "switchboard_batches", status=status) == 0, status
    # The batch is over: nothing is left waiting in the queues its work went through.
    for queue in (messaging.QUEUE_DIAL, messaging.QUEUE_STATUS, messaging.QUEUE_WEBHOOKS):
        assert value(samples, "switchboard_queue_depth", queue=queue) == 0, queue

    # Worker-side, from the worker process through the shared multiprocess directory.
    assert value(samples, "switchboard_dials_total", result="dispatched") == 5
    assert value(samples, "switchboard_dials_total", result="rejected") == 1
    assert value(samples, "switchboard_dial_seconds_count", result="accepted") == 5
    assert value(samples, "switchboard_dial_seconds_count", result="rejected") == 1
    assert value(samples, "switchboard_dial_seconds_bucket", result="accepted", le="+Inf") == 5
    accepted_seconds = value(samples, "switchboard_dial_seconds_sum", result="accepted")
    assert accepted_seconds is not None and accepted_seconds > 0
    assert value(samples, "switchboard_provider_errors_total", code="21217") == 1
    # Every dial waited for a pacing slot; a slot taken again (after the fence's read of a long
    # wait, or by a dial message delivered again under load) is observed again.
    pacing_waits = value(samples, "switchboard_pacing_wait_seconds_count")
    assert pacing_waits is not None and pacing_waits >= 6
    assert value(samples, "switchboard_pacing_handed_back_total") == 0
    # Recorded by the API: the carrier's status callbacks, the final one of each placed call
    # at least.
    callbacks = value(samples, "switchboard_status_callbacks_total")
    assert callbacks is not None and callbacks >= 5

    # With nobody consuming or ticking, each queue's depth grows by exactly what is published
    # to it (batch-control may hold a tick sent before beat stopped, hence the difference).
    for process in ("beat", "worker0", "webhooks"):
        stack.kill(process)
    idle = scrape(stack)
    published = dict(zip(messaging.QUEUES, (1, 2, 3, 4), strict=True))
    for queue, count in published.items():
        _publish(stack.env(), messaging.TASK_NOOP, [[]] * count, queue=queue)
    loaded = scrape(stack)
    for queue, count in published.items():
        before = value(idle, "switchboard_queue_depth", queue=queue)
        assert before is not None, queue
        assert value(loaded, "switchboard_queue_depth", queue=queue) == before + count, queue


def test_a_worker_without_the_multiprocess_directory_serves_its_own_metrics(make_stack):
    stack = make_stack(workers=0)
    port = free_port()
    env = stack.env()
    env["SWITCHBOARD_WORKER_METRICS_PORT"] = str(port)
    stack.start_worker(name="solo", env=env)
    client = stack.client(new_api_key(stack))
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(3, "+1646555", 1400))
    wait_completed(client, response.json()["id"])

    def worker_dials() -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "switchboard_dials_total" and sample.labels == {
                    "result": "dispatched"
                }:
                    return sample.value
        return None

    wait_for(lambda: worker_dials() == 3, 10, what="three dispatched dials on the worker's port")
    # That worker wrote nothing to the shared directory, so the API does not count its dials.
    assert value(scrape(stack), "switchboard_dials_total", result="dispatched") in (None, 0)
