"""Deleting a batch, its streamed export, the xi-api-key header and telephony_call_config."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest
import redis

from shared import messaging
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, wait_for

PREFIXES = ("/v1/convai/batch-calling", "/v1/voiceai/batch-calling")


def wait_final(client: httpx.Client, batch_id: str) -> dict:
    def done() -> dict | None:
        body = client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(done, 60, what=f"batch {batch_id} to end")


def no_dial_left(stack: Stack) -> bool:
    """No dial message waits in the queue, and every one a worker took has ended (a retried
    one is held by its worker until it runs again)."""
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        queued = broker.llen(stack.redis_prefix + messaging.QUEUE_DIAL)
    finally:
        broker.close()
    taken = {
        **stack.task_events(messaging.TASK_DIAL),
        **stack.task_events(messaging.TASK_DIAL_MANY),
    }
    return queued == 0 and all(events & {"succeeded", "raised"} for events in taken.values())


def rows_of(stack: Stack, batch_id: str) -> dict[str, int]:
    counts = stack.sql(
        "SELECT (SELECT count(*) FROM batches WHERE id = %s), "
        "(SELECT count(*) FROM calls WHERE batch_id = %s), "
        "(SELECT count(*) FROM idempotency_keys WHERE batch_id = %s), "
        "(SELECT count(*) FROM webhook_deliveries WHERE payload -> 'data' ->> 'batch_id' = %s)",
        batch_id,
        batch_id,
        batch_id,
        batch_id,
    )[0]
    return dict(zip(("batches", "calls", "idempotency_keys", "deliveries"), counts, strict=True))


def test_xi_api_key_is_a_third_way_to_send_the_key(stack: Stack, api_key: str) -> None:
    with stack.raw_client() as http:
        ok = http.get("/v1/convai/batch-calling/workspace", headers={"xi-api-key": api_key})
        assert ok.status_code == 200
        ok = http.get("/v1/voiceai/agents", headers={"xi-api-key": api_key})
        assert ok.status_code == 200
        wrong = http.get("/v1/voiceai/agents", headers={"xi-api-key": "sb_wrong"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"][0]["type"] == "unauthorized"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_removes_the_batch_its_calls_and_what_points_at_them(
    stack: Stack, client: httpx.Client, prefix: str
) -> None:
    start = 0 if prefix == PREFIXES[0] else 10
    hook = client.post(
        "/v1/voiceai/webhooks", json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 32}
    )
    assert hook.status_code in (200, 201), hook.text
    body = {
        "call_name": "to delete",
        "agent_id": create_agent(client),
        "agent_phone_number_id": register_number(client),
        "recipients": recipients(2, prefix="+1332556", start=start),
    }
    batch_id = client.post(
        "/v1/voiceai/batch-calling/submit", json=body, headers={"Idempotency-Key": "delete-me"}
    ).json()["id"]
    wait_final(client, batch_id)
    before = rows_of(stack, batch_id)
    assert before["calls"] == 2 and before["idempotency_keys"] == 1 and before["deliveries"] >= 2

    with stack.client(new_api_key(stack)) as stranger:
        response = stranger.delete(f"{prefix}/{batch_id}")
        assert response.status_code == 404
        assert response.json()["detail"][0]["loc"] == ["path", "batch_id"]
    assert rows_of(stack, batch_id) == before

    assert client.delete(f"{prefix}/{batch_id}").status_code == 204
    assert rows_of(stack, batch_id) == dict.fromkeys(before, 0)
    assert client.get(f"{prefix}/{batch_id}").status_code == 404
    assert client.delete(f"{prefix}/{batch_id}").status_code == 404


def test_deleting_a_running_batch_cancels_it_and_hangs_up_first(make_stack) -> None:
    stack = make_stack(
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.2, "talk_seconds": 300}]}
    )
    with stack.client(new_api_key(stack)) as client:
        batch_id = submit(
            client,
            create_agent(client),
            register_number(client),
            recipients(30, prefix="+1332556", start=100),
            target_concurrency_limit=2,
        ).json()["id"]
        wait_for(
            lambda: any(c["status"] == "in-progress" for c in stack.carrier.calls()),
            30,
            what="a call to be answered",
        )
        response = client.delete(f"/v1/convai/batch-calling/{batch_id}")
        assert response.status_code == 204, response.text
        answered_at = time.time()
        assert rows_of(stack, batch_id)["calls"] == 0
        placed = stack.carrier.calls()
        assert placed and all(c["end_time"] is not None for c in placed)
        # Every dial message has been taken and run to its end: a dial that slipped past the
        # cancel would have reached the carrier by now.
        wait_for(lambda: no_dial_left(stack), 30, what="every dial message to be taken")
        assert [c["sid"] for c in stack.carrier.calls()] == [c["sid"] for c in placed]
        assert len(placed) <= 2
        assert max(c["created_at"] for c in placed) <= answered_at


def test_export_streams_the_first_n_rows_with_the_export_csv_columns(
    stack: Stack, client: httpx.Client
) -> None:
    batch_id = submit(
        client,
        create_agent(client),
        register_number(client),
        recipients(3, prefix="+1332556", start=200),
        scheduled_time_unix=int(time.time()) + 3600,
    ).json()["id"]
    whole = client.get(f"/v1/voiceai/batch-calling/{batch_id}/export.csv").text
    for prefix in PREFIXES:
        streamed = client.get(f"{prefix}/{batch_id}/export")
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/csv")
        assert streamed.text == whole
        limited = client.get(f"{prefix}/{batch_id}/export", params={"limit": 2}).text
        rows = list(csv.reader(io.StringIO(limited)))
        assert rows == list(csv.reader(io.StringIO(whole)))[:3]
    for bad in (0, 10_001):
        response = client.get(f"/v1/convai/batch-calling/{batch_id}/export", params={"limit": bad})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    with stack.client(new_api_key(stack)) as stranger:
        assert stranger.get(f"/v1/convai/batch-calling/{batch_id}/export").status_code == 404


def test_telephony_call_config_is_always_an_object(stack: Stack, client: httpx.Client) -> None:
    batch = submit(
        client,
        create_agent(client),
        register_number(client),
        recipients(1, prefix="+1332556", start=300),
        scheduled_time_unix=int(time.time()) + 3600,
    ).json()
    default = batch["telephony_call_config"]
    assert isinstance(default, dict) and default["ringing_timeout_secs"] >= 5
    detail = client.get(f"/v1/convai/batch-calling/{batch['id']}").json()
    assert detail["telephony_call_config"] == default
    listed = client.get("/v1/convai/batch-calling/workspace").json()["batch_calls"]
    assert listed[0]["telephony_call_config"] == default
