"""Retries, cancel, pause and resume with real workers and the sandbox carrier."""

from __future__ import annotations

import collections
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.factories import recipients, submit
from tests.support import Stack, wait_for
from tests.worker.test_dispatch import (
    assert_counters_match_rows,
    batch_state,
    dial_counts,
    setup_workspace,
    wait_final,
)

BUSY_THEN_ANSWER = {
    "rules": [
        {"pattern": "+1646555130*", "outcome_sequence": ["busy", "completed"]},
        {"pattern": "+1646555131*", "outcome": "busy"},
    ]
}


def test_retry_policy_turns_busy_into_completed_on_the_second_attempt(make_stack):
    stack = make_stack(sandbox=BUSY_THEN_ANSWER)
    client, agent_id, number_id = setup_workspace(stack)
    policy = {"max_attempts": 3, "retry_on": ["busy"], "delays_s": [1]}
    people = recipients(5, "+1646555", 1300) + recipients(2, "+1646555", 1310)
    response = submit(client, agent_id, number_id, people, retry_policy=policy)
    assert response.status_code == 200, response.text
    assert response.json()["retry_policy"] == policy
    batch = wait_final(client, response.json()["id"], timeout=60)

    assert batch["status"] == "completed"
    assert_counters_match_rows(stack, batch)
    # 5 recipients answered on attempt 2; 2 stayed busy through all 3 attempts.
    assert batch["retry_count"] == 5 * 1 + 2 * 2
    assert batch["total_calls_dispatched"] == 7 and batch["total_calls_finished"] == 7
    by_number = {r["phone_number"]: r for r in batch["recipients"]}
    answered = by_number["+16465551300"]
    assert (answered["status"], answered["outcome"], answered["attempts"]) == (
        "completed",
        "answered",
        2,
    )
    assert [a["outcome"] for a in answered["attempt_history"]] == ["busy", "answered"]
    assert len({a["provider_call_sid"] for a in answered["attempt_history"]}) == 2
    stubborn = by_number["+16465551310"]
    assert (stubborn["status"], stubborn["outcome"], stubborn["attempts"]) == ("failed", "busy", 3)
    counts = dial_counts(stack)
    assert counts["+16465551300"] == 2 and counts["+16465551310"] == 3


def test_manual_retry_redials_failed_recipients_only(make_stack):
    stack = make_stack(sandbox=BUSY_THEN_ANSWER)
    client, agent_id, number_id = setup_workspace(stack)
    people = recipients(3, "+1646555", 1300) + recipients(2, "+1646555", 1320)
    batch_id = submit(client, agent_id, number_id, people).json()["id"]
    first = wait_final(client, batch_id, timeout=60)
    assert collections.Counter(r["outcome"] for r in first["recipients"]) == {
        "busy": 3,
        "answered": 2,
    }

    response = client.post(f"/v1/voiceai/batch-calling/{batch_id}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "in_progress"
    assert response.json()["total_calls_finished"] == 2
    second = wait_final(client, batch_id, timeout=60)
    assert second["status"] == "completed"
    assert [r["outcome"] for r in second["recipients"]] == ["answered"] * 5
    assert second["retry_count"] == 3 and second["total_calls_finished"] == 5
    assert_counters_match_rows(stack, second)
    counts = dial_counts(stack)
    assert counts["+16465551320"] == 1 and counts["+16465551300"] == 2


# Calls that ring a second and then talk for five: a batch has live calls to hang up.
LONG_CALLS = {
    "rules": [{"pattern": "*", "api_latency_ms": 40, "ring_seconds": 1.0, "talk_seconds": 5.0}]
}


def test_cancel_racing_four_busy_workers_places_nothing_after_the_response(make_stack):
    stack = make_stack(sandbox=LONG_CALLS, workers=4)
    cancel_mid_batch(stack, setup_workspace(stack), recipients(400))


def cancel_mid_batch(
    stack: Stack, workspace: tuple[Any, str, str], people: list[dict[str, Any]]
) -> None:
    """Cancel a batch of ``people`` once 30 of its calls are placed: the cancel answers, no
    call is placed after its answer, live calls are ended through the provider, every
    recipient ends final and the counters equal their recount."""
    client, agent_id, number_id = workspace
    batch_id = submit(client, agent_id, number_id, people).json()["id"]
    wait_for(
        lambda: batch_state(client, batch_id)["total_calls_dispatched"] >= 30,
        60,
        what="the batch to be dialing",
    )

    response = client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    answered_at = time.time()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    again = client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    # Calls in flight were ended through the provider, and every recipient is final.
    final = wait_for(
        lambda: (lambda b: b if not _unfinished(b) else None)(batch_state(client, batch_id)),
        90,
        what="every recipient to be final",
        describe=lambda: _describe_unfinished(stack, batch_state(client, batch_id)),
    )
    # Once every call is final none can be claimed, so no dial is left that could still
    # reach the carrier: a call placed after the response would be among these.
    placed = stack.carrier.calls()
    assert placed and max(c["created_at"] for c in placed) <= answered_at
    assert len(placed) < len(people)
    assert final["status"] == "cancelled"
    assert all(c["status"] in ("canceled", "completed") for c in stack.carrier.calls())
    assert collections.Counter(r["outcome"] for r in final["recipients"])["batch_cancelled"] >= 1
    assert_counters_match_rows(stack, final)
    retry = client.post(f"/v1/voiceai/batch-calling/{batch_id}/retry")
    assert retry.status_code == 409


FINAL_STATUSES = ("completed", "failed", "voicemail", "cancelled")


def _unfinished(batch: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in batch["recipients"] if r["status"] not in FINAL_STATUSES]


def _describe_unfinished(stack: Stack, batch: dict[str, Any]) -> str:
    left = _unfinished(batch)
    rows = stack.sql(
        "SELECT status, outcome, provider_call_sid, due_at, claim_token IS NOT NULL FROM calls"
        " WHERE batch_id = %s AND status NOT IN %s LIMIT 5",
        batch["id"],
        FINAL_STATUSES,
    )
    sids = {row[2] for row in rows}
    carrier = [(c["sid"], c["status"]) for c in stack.carrier.calls() if c["sid"] in sids]
    return f"{len(left)} not final, e.g. {rows}; carrier: {carrier}"


def test_pause_stops_new_calls_and_resume_finishes_the_batch(stack: Stack):
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(
        client,
        agent_id,
        number_id,
        recipients(60, "+1646555", 1400),
        scheduled_time_unix=int(time.time()) + 3600,
    ).json()["id"]
    paused = client.post(f"/v1/voiceai/batch-calling/{batch_id}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    stack.sql("UPDATE batches SET scheduled_at = now() WHERE id = %s", batch_id)
    stack.wait_for_ticks(2)  # the batch is due: a tick would start it were it not paused
    assert batch_state(client, batch_id)["status"] == "pending"
    assert not [
        c
        for c in stack.carrier.calls()
        if c["to"].startswith("+16465551") and "+16465551400" <= c["to"] <= "+16465551459"
    ]

    resumed = client.post(f"/v1/voiceai/batch-calling/{batch_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    final = wait_final(client, batch_id, timeout=60)
    assert final["status"] == "completed" and final["total_calls_finished"] == 60
    assert_counters_match_rows(stack, final)


def _midday_zone(now: datetime) -> tuple[str, int]:
    """A fixed-offset zone where it is about noon now, and its offset in hours."""
    hours = (12 - now.hour) % 24
    hours = hours - 24 if hours > 14 else hours
    return (f"Etc/GMT{-hours:+d}" if hours else "Etc/GMT"), hours


def test_call_outside_its_window_waits_for_the_window_to_open(stack: Stack):
    client, agent_id, number_id = setup_workspace(stack)
    now = datetime.now(UTC)
    zone, hours = _midday_zone(now)
    opens = now + timedelta(hours=hours, seconds=5)  # the zone's wall clock at the opening
    opens_at = now.timestamp() + 5
    window = {
        "start": opens.strftime("%H:%M:%S"),
        "end": (opens + timedelta(hours=2)).strftime("%H:%M:%S"),
        "timezone": zone,
    }
    response = submit(
        client, agent_id, number_id, recipients(3, "+1646555", 1900), calling_window=window
    )
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    wait_for(
        lambda: batch_state(client, batch_id)["status"] == "in_progress",
        10,
        what="the batch to start",
    )
    stack.wait_for_ticks(1)  # a tick publishes every due call; these are not due yet
    assert time.time() < opens_at  # (else the tick above proved nothing)
    state = batch_state(client, batch_id)
    assert state["status"] == "in_progress"
    assert [r["status"] for r in state["recipients"]] == ["pending"] * 3
    assert not [c for c in stack.carrier.calls() if c["to"].startswith("+1646555190")]
    final = wait_final(client, batch_id, timeout=30)
    assert final["status"] == "completed"
    placed = [c for c in stack.carrier.calls() if c["to"].startswith("+1646555190")]
    assert len(placed) == 3
    assert min(c["created_at"] for c in placed) >= opens_at - 1


def test_batch_window_may_narrow_the_default_and_widen_it_only_explicitly(make_stack):
    stack = make_stack(
        settings_env={"SWITCHBOARD_DEFAULT_CALLING_WINDOW": "08:00-21:00"}, workers=0, beat=False
    )
    client, agent_id, number_id = setup_workspace(stack)
    later = int(time.time()) + 3600
    narrow = submit(
        client,
        agent_id,
        number_id,
        recipients(1),
        scheduled_time_unix=later,
        calling_window={"start": "09:00", "end": "17:00", "days": [0, 1, 2, 3, 4]},
    )
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["calling_window"]["days"] == [0, 1, 2, 3, 4]
    wide = {"start": "07:00", "end": "22:00"}
    refused = submit(client, agent_id, number_id, recipients(1), calling_window=wide)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "calling_window"]
    allowed = submit(
        client,
        agent_id,
        number_id,
        recipients(1),
        scheduled_time_unix=later,
        calling_window={**wide, "override_default_window": True},
    )
    assert allowed.status_code == 200
    backwards = submit(
        client,
        agent_id,
        number_id,
        recipients(1),
        calling_window={"start": "17:00", "end": "09:00"},
    )
    assert backwards.status_code == 422


def test_frequency_cap_holds_the_next_dial_to_a_number(make_stack):
    stack = make_stack(settings_env={"SWITCHBOARD_MAX_DIALS_PER_NUMBER_PER_WEEK": "2"})
    client, agent_id, number_id = setup_workspace(stack)
    for _ in range(2):
        batch_id = submit(client, agent_id, number_id, recipients(1, "+1646555", 2000)).json()["id"]
        assert wait_final(client, batch_id, timeout=30)["status"] == "completed"
    third = submit(client, agent_id, number_id, recipients(1, "+1646555", 2000)).json()["id"]
    # The dial found the cap reached and put the call off until a dial of the week expires.
    wait_for(
        lambda: (
            stack.sql(
                "SELECT due_at > now() + interval '6 days' FROM calls WHERE batch_id = %s", third
            )
            == [(True,)]
        ),
        30,
        what="the third dial to be put off by the cap",
    )
    stack.wait_for_ticks(1)  # and no tick dials it meanwhile
    state = batch_state(client, third)
    assert state["status"] == "in_progress"
    assert state["recipients"][0]["status"] == "pending"
    assert dial_counts(stack)["+16465552000"] == 2


def test_target_concurrency_limit_caps_live_calls(make_stack):
    stack = make_stack(
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.2, "talk_seconds": 1.0}]}
    )
    client, agent_id, number_id = setup_workspace(stack)
    response = submit(
        client, agent_id, number_id, recipients(12, "+1646555", 2300), target_concurrency_limit=3
    )
    batch = wait_final(client, response.json()["id"], timeout=90)
    assert batch["status"] == "completed" and batch["total_calls_finished"] == 12
    assert 1 <= stack.carrier.stats()["max_live_calls"] <= 3
    assert set(dial_counts(stack).values()) == {1}
    assert_counters_match_rows(stack, batch)
    # The first wave's nine calls without a slot went back to pending once each; after that
    # the tick publishes only as many calls as there are free slots, instead of re-dialing
    # every waiting call at each tick.
    logs = "".join(p.read_text() for p in stack.log_dir.glob("worker*.log"))
    assert logs.count("'no_slot'") <= 14


def test_lost_callbacks_are_looked_up_and_free_their_slots(make_stack):
    # No callback ever comes: once a call has heard nothing for its ring timeout and the
    # grace, it is looked up at the provider, finalised from what it says, and its slot given
    # back for the next call.
    stack = make_stack(
        settings_env={
            "SWITCHBOARD_DEFAULT_RINGING_TIMEOUT_S": "1",
            "SWITCHBOARD_CALLBACK_GRACE_S": "2",
        },
        sandbox={
            "rules": [
                {"pattern": "*", "ring_seconds": 0.1, "talk_seconds": 0.2, "drop_callbacks": True}
            ]
        },
    )
    client, agent_id, number_id = setup_workspace(stack)
    response = submit(
        client, agent_id, number_id, recipients(4, "+1646555", 2500), target_concurrency_limit=2
    )
    batch_id = response.json()["id"]
    batch = wait_final(client, batch_id, timeout=60)
    assert batch["status"] == "completed"
    assert [r["status"] for r in batch["recipients"]] == ["completed"] * 4
    placed = sorted(c["created_at"] for c in stack.carrier.calls())
    assert len(placed) == 4 and not any(c["callbacks_sent"] for c in stack.carrier.calls())
    # The second pair waited for the first pair to be looked up.
    assert placed[2] - placed[0] >= 2.5
    assert_counters_match_rows(stack, batch)


def test_call_found_live_after_its_batch_was_cancelled_is_hung_up(make_stack):
    # The dial's answer is lost to a timeout and no callback ever comes, so the call is
    # unknown when the batch is cancelled; reconciliation later finds it talking and ends it
    # through the provider.
    stack = make_stack(
        sandbox={
            "rules": [
                {
                    "pattern": "+16465552700",
                    "timeout_seconds": 3,
                    "ring_seconds": 0.2,
                    "talk_seconds": 300,
                    "drop_callbacks": True,
                }
            ]
        },
        # A claimed call is reconciled this long after its claim: past the dial's 2 s
        # provider timeout, and well past the cancel below.
        settings_env={"SWITCHBOARD_DIAL_STALE_AFTER_S": "5"},
    )
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(1, "+1646555", 2700)).json()["id"]
    wait_for(lambda: stack.carrier.calls(), 20, what="the call to reach the carrier")
    cancelled = client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    final = wait_for(
        lambda: (lambda b: b if not _unfinished(b) else None)(batch_state(client, batch_id)),
        60,
        what="the call to be final",
        describe=lambda: _describe_unfinished(stack, batch_state(client, batch_id)),
    )
    [call] = stack.carrier.calls()
    assert call["status"] in ("completed", "canceled") and call["end_time"] is not None
    assert call["end_time"] - call["created_at"] < 60
    assert final["recipients"][0]["status"] == "completed"
    assert final["recipients"][0]["provider_call_sid"] == call["sid"]
    assert_counters_match_rows(stack, final)


def test_tick_finalises_calls_left_pending_in_a_cancelled_batch(stack: Stack):
    # What a claim that rolled back while its batch was being cancelled leaves behind: the
    # cancel passed the call over (a claim held it), and the call is pending still.
    client, agent_id, number_id = setup_workspace(stack)
    batch_id = submit(
        client, agent_id, number_id, recipients(3, "+1646555", 3500), scheduled_time_unix=2**31
    ).json()["id"]
    stack.sql(
        "UPDATE batches SET status = 'cancelled', last_updated_at = now() WHERE id = %s", batch_id
    )
    final = wait_for(
        lambda: (lambda b: b if not _unfinished(b) else None)(batch_state(client, batch_id)),
        20,
        what="the tick to finalise the orphaned calls",
    )
    assert {r["outcome"] for r in final["recipients"]} == {"batch_cancelled"}
    assert_counters_match_rows(stack, final)
