"""End to end with real worker processes: exact counters, duplicates, crashes, schedules."""

from __future__ import annotations

import collections
import signal
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from twilio.request_validator import RequestValidator

from shared import messaging
from shared.settings import SANDBOX_AUTH_TOKEN
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import RECOUNT, Stack, wait_for

MIXED_OUTCOMES = {
    "seed": 11,
    "rules": [
        {
            "pattern": "*",
            "outcome": {
                "completed": 0.5,
                "busy": 0.15,
                "no-answer": 0.15,
                "voicemail": 0.1,
                "failed": 0.1,
            },
            "ring_seconds": 0.02,
            "talk_seconds": 0.05,
        }
    ],
    "duplicate_callbacks_probability": 0.3,
    "shuffle_callbacks": True,
}


def batch_state(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/voiceai/batch-calling/{batch_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_final(client: httpx.Client, batch_id: str, timeout: float) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (lambda b: b if b["status"] in ("completed", "failed") else None)(
                batch_state(client, batch_id)
            ),
            timeout,
            interval=0.5,
            what=f"batch {batch_id} to end",
        )
    )


def assert_counters_match_rows(stack: Stack, batch: dict[str, Any]) -> None:
    total, dispatched, finished, retries, final = stack.sql(RECOUNT, batch["id"])[0]
    assert batch["total_calls_scheduled"] == total
    assert batch["total_calls_dispatched"] == dispatched
    assert batch["total_calls_finished"] == finished
    assert batch["retry_count"] == retries
    assert final == total


def dial_counts(stack: Stack) -> collections.Counter[str]:
    # The number each call was for: its To, or the user part of a SIP URI it was dialed at.
    return collections.Counter(call["number"] for call in stack.carrier.calls())


def setup_workspace(stack: Stack, provider: str = "twilio") -> tuple[httpx.Client, str, str]:
    """A workspace on the stack with an agent and a caller number of ``provider`` (on the
    environment's account of it)."""
    client = stack.client(new_api_key(stack))
    return client, create_agent(client), register_number(client, provider=provider)


# Each recipient's status and outcome, for the outcome the carrier played its call out with.
PLAYED_OUTCOMES = {
    "completed": ("completed", "answered"),
    "busy": ("failed", "busy"),
    "no-answer": ("failed", "no_answer"),
    "voicemail": ("voicemail", "voicemail"),
    "failed": ("failed", "call_failed"),
}


def thousand_mixed_outcomes(
    stack: Stack, workspace: tuple[httpx.Client, str, str], timeout: float = 150
) -> dict[str, Any]:
    """A 1,000-recipient batch from the workspace's number on a carrier playing
    ``MIXED_OUTCOMES``, to its end: every recipient final once as its call was played out,
    counters equal to their recount, no number dialed twice. The batch, as the API shows it."""
    client, agent_id, number_id = workspace
    response = submit(
        client,
        agent_id,
        number_id,
        recipients(1000),
        telephony_call_config={"ringing_timeout_secs": 25},
    )
    assert response.status_code == 200, response.text
    batch = wait_final(client, response.json()["id"], timeout=timeout)

    assert batch["status"] == "completed"
    assert_counters_match_rows(stack, batch)
    assert batch["total_calls_scheduled"] == 1000
    assert batch["total_calls_dispatched"] == 1000
    assert batch["total_calls_finished"] == 1000
    counts = dial_counts(stack)
    assert len(counts) == 1000 and set(counts.values()) == {1}
    # Every recipient ended as the carrier played its call out.
    played = {c["number"]: c["outcome"] for c in stack.carrier.calls()}
    for recipient in batch["recipients"]:
        assert (recipient["status"], recipient["outcome"]) == PLAYED_OUTCOMES[
            played[recipient["phone_number"]]
        ]
    assert {r["outcome"] for r in batch["recipients"]} == {
        "answered",
        "busy",
        "no_answer",
        "voicemail",
        "call_failed",
    }
    return batch


def test_thousand_recipients_mixed_outcomes_counters_equal_recount(broker, make_stack):
    stack = make_stack(sandbox=MIXED_OUTCOMES, **broker)
    batch = thousand_mixed_outcomes(stack, setup_workspace(stack))
    # Each call was created with our TwiML and status URLs, the progress events, answering
    # machine detection and the batch's ringing timeout.
    call_ids = {r["phone_number"]: r["id"] for r in batch["recipients"]}
    for placed in stack.carrier.calls():
        call_id = call_ids[placed["to"]]
        assert placed["url"].split("?")[0].endswith(f"/v1/telephony/twilio/twiml/{call_id}")
        status_url, overrides = placed["status_callback"].split("#")
        assert status_url.endswith(f"/v1/telephony/twilio/status/{call_id}")
        assert overrides == "ct=2000&rt=5000&tt=15000&rc=5&rp=all"  # Twilio's resend overrides
        assert placed["events"] == ["answered", "completed"]
        assert placed["machine_detection"] == "Enable"
        assert placed["timeout"] == 25
    assert stack.carrier.stats()["callbacks_sent"] >= 1000  # at least the final one per call


def test_duplicate_dial_and_status_deliveries_change_nothing(broker, make_stack):
    stack = make_stack(**broker)
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(2, "+1646555", 800)).json()["id"]
    before = wait_final(client, batch_id, timeout=60)
    call_ids = [
        r[0]
        for r in stack.sql("SELECT id FROM calls WHERE batch_id = %s ORDER BY position", batch_id)
    ]

    # The same dial message delivered again, to the real worker, three times over.
    dials = redeliver_dials(stack, call_ids)

    # The same final status callback delivered again, correctly signed.
    (sid,) = stack.sql("SELECT provider_call_sid FROM calls WHERE id = %s", call_ids[0])[0]
    url = f"{stack.api_url}/v1/telephony/twilio/status/{call_ids[0]}"
    for status in ("completed", "in-progress", "initiated", "ringing", "busy"):
        params = {
            "AccountSid": "AC00000000000000000000000000000000",
            "CallSid": sid,
            "CallStatus": status,
            "CallDuration": "3",
        }
        signature = RequestValidator(SANDBOX_AUTH_TOKEN).compute_signature(url, params)
        response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 204
    # The worker has taken every duplicate: each dial message ran to its end, and every
    # callback left the status inbox (the transaction that applies a report deletes it).
    wait_taken(stack, dials)
    wait_for(
        lambda: (
            stack.sql("SELECT count(*) FROM status_inbox WHERE call_id = %s", call_ids[0]) == [(0,)]
        ),
        30,
        what="the duplicate callbacks to be applied",
    )

    after = batch_state(client, batch_id)
    for counter in ("total_calls_dispatched", "total_calls_finished", "retry_count"):
        assert after[counter] == before[counter]
    assert [r["status"] for r in after["recipients"]] == [r["status"] for r in before["recipients"]]
    assert dial_counts(stack)["+16465550800"] == 1 and dial_counts(stack)["+16465550801"] == 1
    assert_counters_match_rows(stack, after)


def test_a_duplicate_dial_of_a_live_call_leaves_its_slot_held(make_stack):
    stack = make_stack(
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.1, "talk_seconds": 6}]}
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(1, "+1646555", 850)).json()["id"]
    ((call_id, workspace_id),) = stack.sql(
        "SELECT id, workspace_id FROM calls WHERE batch_id = %s", batch_id
    )
    wait_for(
        lambda: stack.sql("SELECT status FROM calls WHERE id = %s", call_id) == [("in_progress",)],
        30,
        what="the call to be answered",
    )
    slot = f"{stack.redis_prefix}slots:workspace:{workspace_id}"
    broker = redis.Redis.from_url(stack.redis_url)
    assert broker.zscore(slot, call_id) is not None
    # Another delivery of its dial message finds the call claimed: the slot stays the call's.
    _publish(stack.env(), messaging.TASK_DIAL, [[call_id]])
    wait_for(
        lambda: "'not_claimed'" in (stack.log_dir / "worker0.log").read_text(),
        20,
        what="the duplicate dial to be taken",
    )
    assert broker.zscore(slot, call_id) is not None
    assert wait_final(client, batch_id, timeout=30)["status"] == "completed"
    assert broker.zscore(slot, call_id) is None
    assert dial_counts(stack)["+16465550850"] == 1


def test_a_claim_left_standing_undialed_is_redialed_with_its_slot_given_back(make_stack):
    # A claim that stands with no dial behind it (a crash after the claim, or an undo that
    # failed): the tick finds no such call at the provider, gives the claim's slot back and
    # dials again. The redial is undone here (outside the calling window, which opens only
    # the day after tomorrow), so a slot still held by the old claim would stay taken for its
    # whole lease while the call waits.
    stack = make_stack()
    client, agent_id, number_id = setup_workspace(stack)
    today = datetime.now(UTC).weekday()
    window = {
        "start": "00:00",
        "end": "23:59",
        "days": [day for day in range(7) if day not in (today, (today + 1) % 7)],
        "timezone": "UTC",
    }
    people = recipients(1, "+1646555", 860)
    later = int(time.time()) + 86_400
    batch_id = submit(
        client, agent_id, number_id, people, scheduled_time_unix=later, calling_window=window
    ).json()["id"]
    ((call_id, workspace_id),) = stack.sql(
        "SELECT id, workspace_id FROM calls WHERE batch_id = %s", batch_id
    )
    slot = f"{stack.redis_prefix}slots:workspace:{workspace_id}"
    broker = redis.Redis.from_url(stack.redis_url)
    broker.zadd(slot, {call_id: time.time() + 3600})
    stack.sql(
        "UPDATE batches SET status = 'in_progress' WHERE id = %s; "
        "UPDATE calls SET status = 'dialing', claim_token = 'lost', "
        "claimed_at = now() - interval '1 minute' WHERE id = %s",
        batch_id,
        call_id,
    )
    wait_for(
        lambda: (
            stack.sql(
                "SELECT status FROM calls WHERE id = %s AND due_at > now() + interval '1 hour'",
                call_id,
            )
            == [("pending",)]
        ),
        60,
        what="the stale claim to be reconciled and the redial to wait for the window",
    )
    assert broker.zscore(slot, call_id) is None
    assert "+16465550860" not in dial_counts(stack)


def _publish(
    env: dict[str, str], task: str, arg_lists: list[list[str]], queue: str | None = None
) -> list[str]:
    """Publish with the stack's broker settings from this process, to the task's queue or to
    ``queue``; the messages' task ids."""
    from celery import Celery

    from shared.messaging import TASK_QUEUES, celery_config
    from shared.settings import Settings

    settings = Settings.model_validate(
        {
            "DATABASE_URL": env["DATABASE_URL"],
            "REDIS_URL": env["REDIS_URL"],
            "redis_key_prefix": env["SWITCHBOARD_REDIS_KEY_PREFIX"],
            "SWITCHBOARD_BROKER_URL": env.get("SWITCHBOARD_BROKER_URL", ""),
        }
    )
    app = Celery("publisher")
    app.conf.update(celery_config(settings))
    with app.producer_or_acquire() as producer:
        return [
            app.send_task(task, args=args, queue=queue or TASK_QUEUES[task], producer=producer).id
            for args in arg_lists
        ]


def redeliver_dials(stack: Stack, call_ids: list[str], times: int = 3) -> list[str]:
    """Publish the dial message of each call again, ``times`` over; the messages' task ids."""
    env = stack.env()
    return [
        task_id
        for _ in range(times)
        for task_id in _publish(env, messaging.TASK_DIAL, [[cid] for cid in call_ids])
    ]


def wait_taken(stack: Stack, dials: list[str]) -> None:
    """Wait until the worker has run each of these dial messages to its end."""
    wait_for(
        lambda: all(
            "succeeded" in stack.task_events(messaging.TASK_DIAL).get(task_id, ())
            for task_id in dials
        ),
        30,
        what="the duplicate dial messages to be taken",
    )


# Calls slow enough for a batch of 300 to be under way when a worker is killed.
SLOW_CALLS = {
    "seed": 3,
    "rules": [{"pattern": "*", "api_latency_ms": 30, "ring_seconds": 0.3, "talk_seconds": 0.5}],
}


def test_sigkill_mid_batch_loses_nothing_and_doubles_nothing(broker, make_stack):
    stack = make_stack(sandbox=SLOW_CALLS, workers=1, embed_beat=False, **broker)
    sigkill_mid_batch(stack, setup_workspace(stack), recipients(300))


def sigkill_mid_batch(
    stack: Stack, workspace: tuple[httpx.Client, str, str], people: list[dict[str, Any]]
) -> None:
    """Submit a batch of 300 ``people`` from the workspace's number on a stack whose one
    worker is then killed mid-batch (SIGKILL) and replaced: every recipient ends final once,
    counters equal their recount, and no number is dialed twice."""
    client, agent_id, number_id = workspace
    batch_id = submit(client, agent_id, number_id, people).json()["id"]
    wait_for(
        lambda: batch_state(client, batch_id)["total_calls_dispatched"] >= 60,
        60,
        what="the batch to be well under way",
    )
    stack.kill("worker0")
    mid = batch_state(client, batch_id)
    assert mid["status"] == "in_progress" and mid["total_calls_finished"] < 300
    stack.start_worker(name="worker-restarted")
    batch = wait_final(client, batch_id, timeout=150)

    assert batch["status"] == "completed"
    assert_counters_match_rows(stack, batch)
    assert batch["total_calls_dispatched"] == 300 and batch["total_calls_finished"] == 300
    counts = dial_counts(stack)
    assert len(counts) == 300 and max(counts.values()) == 1, counts.most_common(3)


def test_sigterm_mid_batch_finishes_what_the_worker_holds(broker, make_stack):
    slow = {"rules": [{"pattern": "*", "api_latency_ms": 30, "ring_seconds": 0.3}]}
    stack = make_stack(sandbox=slow, workers=2, embed_beat=False, **broker)
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(300, "+1646555", 3100)).json()["id"]
    wait_for(
        lambda: batch_state(client, batch_id)["total_calls_dispatched"] >= 60,
        60,
        what="the batch to be well under way",
    )
    process = stack.processes["worker0"]
    stack.kill("worker0", signal.SIGTERM)  # warm shutdown: waits for the tasks it runs
    assert process.returncode == 0
    assert batch_state(client, batch_id)["status"] == "in_progress"
    batch = wait_final(client, batch_id, timeout=150)

    assert batch["status"] == "completed"
    assert_counters_match_rows(stack, batch)
    assert batch["total_calls_dispatched"] == 300 and batch["total_calls_finished"] == 300
    counts = dial_counts(stack)
    assert len(counts) == 300 and max(counts.values()) == 1, counts.most_common(3)


def test_scheduled_batch_starts_only_when_its_time_comes(stack: Stack):
    client, agent_id, number_id = setup_workspace(stack)
    start_at = int(time.time()) + 4
    response = submit(
        client, agent_id, number_id, recipients(3, "+1646555", 900), scheduled_time_unix=start_at
    )
    batch = response.json()
    assert batch["status"] == "pending" and batch["scheduled_time_unix"] == start_at
    stack.wait_for_ticks(1)  # a tick starts every due batch; this one is not due yet
    assert time.time() < start_at  # (else the tick above proved nothing)
    assert batch_state(client, batch["id"])["status"] == "pending"
    assert not [c for c in stack.carrier.calls() if c["to"].startswith("+164655509")]
    final = wait_final(client, batch["id"], timeout=30)
    assert final["status"] == "completed" and final["total_calls_finished"] == 3
    placed = [c for c in stack.carrier.calls() if c["to"].startswith("+164655509")]
    assert len(placed) == 3 and min(c["created_at"] for c in placed) >= start_at


def test_rejected_credentials_fail_the_batch(make_stack):
    stack = make_stack(sandbox={"accounts": {"AC00000000000000000000000000000000": "rotated"}})
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(20, "+1646555", 1000)).json()["id"]
    batch = wait_for(
        lambda: (lambda b: b if b["total_calls_finished"] == 20 else None)(
            batch_state(client, batch_id)
        ),
        60,
        what="every call of the failed batch to end",
    )
    assert batch["status"] == "failed"
    outcomes = collections.Counter(r["outcome"] for r in batch["recipients"])
    assert set(outcomes) <= {"provider_auth_failed", "batch_failed"}
    assert outcomes["provider_auth_failed"] >= 1
    # The provider refused the dials of provider_auth_failed (an attempt each); the others
    # were never dialed.
    for recipient in batch["recipients"]:
        assert recipient["attempts"] == (recipient["outcome"] == "provider_auth_failed")
    assert batch["total_calls_finished"] == 20 and batch["total_calls_dispatched"] == 0
    assert not stack.carrier.calls()


def test_provider_rejection_fails_the_call_with_the_providers_message(make_stack):
    stack = make_stack(
        sandbox={
            "rules": [
                {
                    "pattern": "+16465551100",
                    "http_error": 400,
                    "error_code": 21217,
                    "error_message": "Phone number does not appear to be valid",
                }
            ]
        }
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(2, "+1646555", 1100)).json()["id"]
    batch = wait_final(client, batch_id, timeout=60)
    assert batch["status"] == "completed"
    rejected, placed = batch["recipients"]
    assert (rejected["status"], rejected["outcome"]) == ("failed", "provider_error")
    error = stack.sql(
        "SELECT error_code, error_message FROM calls WHERE provider_call_sid IS NULL"
        " AND batch_id = %s",
        batch_id,
    )
    assert error[0][0] == "21217" and "does not appear" in error[0][1]
    assert placed["status"] == "completed"
    assert_counters_match_rows(stack, batch)


def _forget_messages(stack: Stack) -> int:
    """What the broker restarting empty does to this stack: every queued message is gone (on
    Redis, with the stack's keys)."""
    if stack.broker_url is not None:
        return _purge_rabbitmq_queues(stack.broker_url)
    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{stack.redis_prefix}*"))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def _purge_rabbitmq_queues(broker_url: str) -> int:
    """Empty every queue of the stack's virtual host; the messages purged."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    purged = 0
    with Connection(broker_url, connect_timeout=5) as connection:
        for queue in messaging.QUEUES:
            try:
                purged += int(connection.channel().queue_purge(queue) or 0)
            except NotFound:
                continue  # never declared
    return purged


def test_lost_start_and_dial_messages_are_redriven_by_the_tick(broker, make_stack):
    stack = make_stack(workers=0, **broker)
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(30, "+1646555", 1200)).json()["id"]
    assert _forget_messages(stack) >= 1  # the batches.start message is lost

    # Only batch control runs: the tick finds the due batch and publishes its dial messages.
    stack.start_worker(name="control", queues=messaging.QUEUE_BATCH_CONTROL)
    wait_for(
        lambda: (
            stack.sql(
                "SELECT count(*) FROM calls WHERE batch_id = %s AND enqueued_at IS NOT NULL",
                batch_id,
            )[0][0]
            == 30
        ),
        30,
        what="the tick to start the batch",
    )
    assert batch_state(client, batch_id)["status"] == "in_progress"
    _forget_messages(stack)  # and now every dial message is lost

    stack.start_worker(name="dialer", queues="dial,status")
    batch = wait_final(client, batch_id, timeout=60)
    assert batch["status"] == "completed"
    assert_counters_match_rows(stack, batch)
    counts = dial_counts(stack)
    assert len(counts) == 30 and set(counts.values()) == {1}


def test_ambiguous_provider_timeout_is_reconciled_not_redialed(make_stack):
    # The carrier answers after the client's 2 s timeout, but it did create the call.
    stack = make_stack(sandbox={"rules": [{"pattern": "+16465552100", "timeout_seconds": 3}]})
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(2, "+1646555", 2100)).json()["id"]
    batch = wait_final(client, batch_id, timeout=90)
    assert batch["status"] == "completed"
    assert [r["status"] for r in batch["recipients"]] == ["completed", "completed"]
    assert dial_counts(stack)["+16465552100"] == 1
    assert_counters_match_rows(stack, batch)


def test_provider_overload_is_retried_without_failing_the_call(make_stack):
    stack = make_stack(
        sandbox={
            "seed": 1,
            "rules": [
                {"pattern": "+1646555220*", "http_error": 429, "http_error_probability": 0.5}
            ],
        }
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(8, "+1646555", 2200)).json()["id"]
    batch = wait_final(client, batch_id, timeout=90)
    assert [r["status"] for r in batch["recipients"]] == ["completed"] * 8
    assert set(dial_counts(stack).values()) == {1}
    assert stack.carrier.stats().get("rejected_429", 0) >= 1
    assert_counters_match_rows(stack, batch)
