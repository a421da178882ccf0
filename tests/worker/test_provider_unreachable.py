"""A provider nobody can reach: a batch's dials are retried with backoff up to a bound, then
the batch is paused with the reason shown by the API, the dashboard and a webhook; resumed
once the provider is back, it completes with every recipient dialed once."""

from __future__ import annotations

import json
from typing import Any

from sandbox import SandboxCarrier, SandboxConfig
from tests.factories import recipients, submit
from tests.support import free_port, wait_for
from tests.worker.test_dispatch import (
    assert_counters_match_rows,
    batch_state,
    setup_workspace,
    wait_final,
)
from tests.worker.test_webhooks import Receiver

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "an-unreachable-accounts-token"
PAUSE_AFTER_S = 3.0


def test_an_unreachable_provider_pauses_the_batch_and_resume_finishes_it(make_stack):
    port = free_port()  # nothing listens here until the provider "comes back"
    stack = make_stack(
        webhooks_worker=True,
        settings_env={
            "SWITCHBOARD_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "SWITCHBOARD_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "SWITCHBOARD_TWILIO_API_BASE_URL": f"http://127.0.0.1:{port}",
            "SWITCHBOARD_PROVIDER_UNREACHABLE_RETRY_BASE_S": "0.5",
            "SWITCHBOARD_PROVIDER_UNREACHABLE_RETRY_MAX_S": "1",
            "SWITCHBOARD_PROVIDER_UNREACHABLE_PAUSE_AFTER_S": str(PAUSE_AFTER_S),
        },
    )
    receiver = Receiver()
    try:
        client, agent_id, number_id = setup_workspace(stack)
        hook = client.post(
            "/v1/voiceai/webhooks",
            json={"url": receiver.url, "event_types": ["batch.paused", "batch.completed"]},
        )
        assert hook.status_code == 201, hook.text
        people = recipients(6, "+1646555", 1700)
        batch_id = submit(client, agent_id, number_id, people).json()["id"]

        paused = wait_for(
            lambda: (lambda b: b if b["paused"] else None)(batch_state(client, batch_id)),
            30,
            what="the batch to be paused",
        )
        assert paused["paused_reason"] == "provider_unreachable"
        assert paused["status"] == "in_progress"  # the seed's status values are kept
        # The run lasted the bound before the batch was paused.
        [(first, paused_at)] = stack.sql(
            "SELECT first_unreachable_at, paused_at FROM batches WHERE id = %s", batch_id
        )
        assert (paused_at - first).total_seconds() >= PAUSE_AFTER_S
        # Claims in flight when it paused are handed back: every call waits, pending and never
        # placed, for the resume.
        wait_for(
            lambda: (
                stack.sql(
                    "SELECT count(*) FROM calls WHERE batch_id = %s AND status = 'pending'",
                    batch_id,
                )
                == [(len(people),)]
            ),
            10,
            what="every call to be pending",
        )
        assert all(r["attempts"] == 0 for r in batch_state(client, batch_id)["recipients"])

        listed = client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"]
        assert [b["paused_reason"] for b in listed if b["id"] == batch_id] == [
            "provider_unreachable"
        ]
        shown = client.get("/dashboard/data").json()["batches"]
        assert [(b["paused"], b["paused_reason"]) for b in shown if b["id"] == batch_id] == [
            (True, "provider_unreachable")
        ]
        delivered = wait_for(lambda: _bodies(receiver, "batch.paused"), 30, what="batch.paused")
        assert [(d["data"]["batch_id"], d["data"]["paused_reason"]) for d in delivered] == [
            (batch_id, "provider_unreachable")
        ]

        # The provider comes back where it was; nothing was placed meanwhile.
        accounts = {ACCOUNT_SID: AUTH_TOKEN}
        with SandboxCarrier(SandboxConfig(accounts=accounts), port=port).start() as carrier:
            resumed = client.post(f"/v1/voiceai/batch-calling/{batch_id}/resume")
            assert resumed.status_code == 200, resumed.text
            assert (resumed.json()["paused"], resumed.json()["paused_reason"]) == (False, None)
            final = wait_final(client, batch_id, timeout=60)
            assert final["status"] == "completed"
            assert final["total_calls_finished"] == len(people)
            assert_counters_match_rows(stack, final)
            dialed = [call["to"] for call in carrier.calls()]
            assert sorted(dialed) == sorted(p["phone_number"] for p in people)
        assert stack.sql(
            "SELECT first_unreachable_at, paused_reason FROM batches WHERE id = %s", batch_id
        ) == [(None, None)]
        wait_for(lambda: _bodies(receiver, "batch.completed"), 30, what="batch.completed")
    finally:
        receiver.close()


def _bodies(receiver: Receiver, event_type: str) -> list[dict[str, Any]]:
    bodies = [json.loads(r["body"]) for r in receiver.delivered().values()]
    return [b for b in bodies if b["type"] == event_type]
