"""Signed, durable webhooks against a real local receiver."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.webhooks.delivery import verify_signature
from tests.api.test_call_bulk import CALL_BULK, SEED_REQUEST, seed_body, seed_template
from tests.conftest import new_api_key
from tests.factories import recipients, submit
from tests.support import Stack, wait_for
from tests.worker.test_dispatch import setup_workspace, wait_final

SECRET = "whsec_test_0123456789abcdef"


class Receiver:
    """An HTTP server on loopback that records every delivery; it answers 503 to the first
    ``fail_first`` attempts of each event."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    event_id = self.headers.get("Switchboard-Event-Id", "")
                    seen = sum(1 for r in receiver.requests if r["event_id"] == event_id)
                    ok = seen >= receiver.fail_first
                    receiver.requests.append(
                        {
                            "event_id": event_id,
                            "headers": dict(self.headers),
                            "body": body,
                            "ok": ok,
                        }
                    )
                self.send_response(204 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> dict[str, dict[str, Any]]:
        """Accepted deliveries by event id (the JSON body, plus the raw request)."""
        with self._lock:
            return {r["event_id"]: r for r in self.requests if r["ok"]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _register(client: Any, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/voiceai/webhooks", json={"url": url, "secret": SECRET, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _events(receiver: Receiver, count: int) -> dict[str, dict[str, Any]]:
    return dict(
        wait_for(
            lambda: (lambda d: d if len(d) >= count else None)(receiver.delivered()),
            30,
            what=f"{count} deliveries",
        )
    )


def test_every_final_call_and_the_completed_batch_are_delivered_signed(
    stack: Stack, receiver: Receiver
):
    client, agent_id, number_id = setup_workspace(stack)
    endpoint = _register(client, receiver.url)
    assert endpoint["secret"] == SECRET
    assert set(endpoint["event_types"]) == {"call.ended", "batch.completed"}
    only_batches = Receiver()
    try:
        _register(client, only_batches.url, event_types=["batch.completed"])
        batch_id = submit(client, agent_id, number_id, recipients(3, "+1646555", 2800)).json()["id"]
        batch = wait_final(client, batch_id, timeout=60)
        events = _events(receiver, 4)
        assert len(_events(only_batches, 1)) == 1
    finally:
        only_batches.close()

    bodies = {}
    for event_id, request in events.items():
        headers = request["headers"]
        assert verify_signature(
            SECRET,
            request["body"],
            headers["Switchboard-Timestamp"],
            headers["Switchboard-Signature"],
        )
        assert not verify_signature(
            "another-secret-0123456789",
            request["body"],
            headers["Switchboard-Timestamp"],
            headers["Switchboard-Signature"],
        )
        body = json.loads(request["body"])
        assert body["id"] == event_id
        bodies[event_id] = body
    by_type = collections.Counter(b["type"] for b in bodies.values())
    assert by_type == {"call.ended": 3, "batch.completed": 1}
    ended = {
        b["data"]["recipient_id"]: b["data"] for b in bodies.values() if b["type"] == "call.ended"
    }
    for recipient in batch["recipients"]:
        data = ended[recipient["id"]]
        assert data["batch_id"] == batch_id and data["status"] == "completed"
        assert data["provider_call_sid"] == recipient["provider_call_sid"]
        assert data["contact"]["phone_number"] == recipient["phone_number"]
        assert data["attempts"] == 1 and "requestMetadata" in data
    [completed] = [b["data"] for b in bodies.values() if b["type"] == "batch.completed"]
    assert completed["batch_id"] == batch_id and completed["status"] == "completed"
    assert completed["total_calls_finished"] == 3 and completed["total_calls_dispatched"] == 3

    listed = client.get("/v1/voiceai/webhooks/deliveries", params={"limit": 100}).json()
    mine = [d for d in listed["deliveries"] if d["endpoint_id"] == endpoint["id"]]
    assert len(mine) == 4 and all(d["status"] == "delivered" and d["attempts"] == 1 for d in mine)
    assert "secret" not in client.get("/v1/voiceai/webhooks").json()["webhooks"][0]


def test_a_receiver_down_at_first_misses_nothing(make_stack):
    stack = make_stack(
        webhooks_worker=True,
        settings_env={
            "SWITCHBOARD_WEBHOOK_RETRY_BASE_S": "0.5",
            "SWITCHBOARD_WEBHOOK_RETRY_MAX_DELAY_S": "2",
        },
    )
    receiver = Receiver(fail_first=3)
    try:
        client, agent_id, number_id = setup_workspace(stack)
        _register(client, receiver.url)
        batch_id = submit(client, agent_id, number_id, recipients(5, "+1646555", 2900)).json()["id"]
        wait_final(client, batch_id, timeout=60)
        events = _events(receiver, 6)
        attempts = collections.Counter(r["event_id"] for r in receiver.requests)
    finally:
        receiver.close()
    assert len(events) == 6
    # Every retry carried the same event id; each event was accepted on its fourth attempt.
    assert set(attempts.values()) == {4}
    deliveries = wait_for(
        lambda: (
            lambda d: d if all(x["status"] == "delivered" for x in d) and len(d) == 6 else None
        )(client.get("/v1/voiceai/webhooks/deliveries").json()["deliveries"]),
        10,
        what="the deliveries to be marked delivered",
    )
    assert all(d["attempts"] == 4 and d["last_status_code"] == 204 for d in deliveries)


def test_cancelled_calls_are_reported_too(stack: Stack, receiver: Receiver):
    client, agent_id, number_id = setup_workspace(stack)
    _register(client, receiver.url, event_types=["call.ended"])
    batch_id = submit(
        client, agent_id, number_id, recipients(4, "+1646555", 3000), scheduled_time_unix=2**31
    ).json()["id"]
    assert client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel").status_code == 200
    events = _events(receiver, 4)
    statuses = {json.loads(r["body"])["data"]["status"] for r in events.values()}
    assert statuses == {"cancelled"}


def test_endpoint_validation_and_deletion(stack: Stack, receiver: Receiver):
    client, _, _ = setup_workspace(stack)
    bad = client.post("/v1/voiceai/webhooks", json={"url": "ftp://example"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "url"]
    bad = client.post(
        "/v1/voiceai/webhooks", json={"url": receiver.url, "event_types": ["call.started"]}
    )
    assert bad.status_code == 422
    endpoint = _register(client, receiver.url)
    assert client.delete(f"/v1/voiceai/webhooks/{endpoint['id']}").status_code == 204
    assert client.delete(f"/v1/voiceai/webhooks/{endpoint['id']}").status_code == 404
    assert client.get("/v1/voiceai/webhooks").json()["webhooks"] == []


def test_call_bulk_metadata_reaches_the_receiver_as_request_metadata(
    stack: Stack, receiver: Receiver
):
    client = stack.client(new_api_key(stack))
    template_id = seed_template(client)
    _register(client, receiver.url, event_types=["call.ended"])
    response = client.post(CALL_BULK, json=seed_body(template_id))
    assert response.status_code == 201, response.text
    events = _events(receiver, 2)
    by_number = {}
    for request in events.values():
        headers = request["headers"]
        assert verify_signature(
            SECRET,
            request["body"],
            headers["Switchboard-Timestamp"],
            headers["Switchboard-Signature"],
        )
        data = json.loads(request["body"])["data"]
        by_number[data["contact"]["phone_number"]] = data
    for contact in SEED_REQUEST["contacts"]:
        data = by_number[contact["numberToCall"]]
        assert data["requestMetadata"] == contact["metadata"]
        assert data["contact"]["first_name"] == contact["firstName"]
        assert data["contact"]["last_name"] == contact["lastName"]
        assert data["batch_id"] == response.json()["batch_id"]
        assert data["call_id"] in response.json()["call_ids"]
        assert data["status"] == "completed"


def test_two_endpoints_get_every_event_at_once_not_by_redrive(make_stack):
    # With re-drives an hour away, only the publish after commit can deliver in time.
    stack = make_stack(webhooks_worker=True, settings_env={"SWITCHBOARD_REDRIVE_AFTER_S": "3600"})
    first, second = Receiver(), Receiver()
    try:
        client, agent_id, number_id = setup_workspace(stack)
        _register(client, first.url)
        _register(client, second.url)
        submit(client, agent_id, number_id, recipients(2, "+1646555", 3200))
        assert len(_events(first, 3)) == 3 and len(_events(second, 3)) == 3
        assert set(first.delivered()) == set(second.delivered())  # the same event ids
    finally:
        first.close()
        second.close()


def test_a_batch_with_nobody_left_to_call_reports_completed(stack: Stack, receiver: Receiver):
    client, agent_id, number_id = setup_workspace(stack)
    _register(client, receiver.url, event_types=["batch.completed"])
    client.post("/v1/voiceai/dnc", json={"phone_number": "+16465553300"})
    batch_id = submit(client, agent_id, number_id, recipients(1, "+1646555", 3300)).json()["id"]
    [event] = _events(receiver, 1).values()
    data = json.loads(event["body"])["data"]
    assert data["batch_id"] == batch_id and data["status"] == "completed"


def test_webhooks_to_internal_addresses_are_refused(make_stack):
    stack = make_stack(
        webhooks_worker=True,
        settings_env={"SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS": "false"},
        workers=0,
        beat=False,
    )
    client, _, _ = setup_workspace(stack)
    for url in ("http://127.0.0.1:9/hooks", "http://169.254.169.254/latest", "http://10.0.0.7/"):
        response = client.post("/v1/voiceai/webhooks", json={"url": url})
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["type"] == "forbidden_destination"
