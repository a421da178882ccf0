"""Call transitions applied together: one statement per shape, each row guarded by its status."""

from __future__ import annotations

import time

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from shared.dispatch import repository as calls_repo
from shared.lifecycle import store
from shared.lifecycle.plans import Transition
from shared.lifecycle.states import CallStatus
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack


def pending_calls(stack: Stack, count: int, start: int) -> list[str]:
    client = stack.client(new_api_key(stack))
    later = int(time.time()) + 86_400  # never dialed during the test
    batch = submit(
        client,
        create_agent(client),
        register_number(client),
        recipients(count, "+1415555", start),
        scheduled_time_unix=later,
    ).json()
    rows = stack.sql("SELECT id FROM calls WHERE batch_id = %s ORDER BY position", batch["id"])
    return [row[0] for row in rows]


def test_moves_of_one_shape_share_a_statement_and_keep_their_guards(stack: Stack):
    ids = pending_calls(stack, 6, 900)
    skip = Transition(CallStatus.PENDING, CallStatus.CANCELLED)
    stale = Transition(CallStatus.DIALING, CallStatus.CANCELLED)
    requeue = Transition(CallStatus.PENDING, CallStatus.PENDING, requeue_delay_s=60)
    moves = [
        # One shape, three rows: NULL and integer durations, and one whose guard fails.
        store.Move(ids[0], skip, {"outcome": "dnc", "duration_s": None}, {"attempt": 1}),
        store.Move(ids[1], skip, {"outcome": "x", "duration_s": 7}, {"attempt": 2}),
        store.Move(ids[2], stale, {"outcome": "y", "duration_s": 8}, {"attempt": 3}),
        # Another shape: requeued, with a delay in seconds; and a shape alone.
        store.Move(ids[3], requeue, {"ended_at": store.NOW}, {"attempt": 4}),
        store.Move(ids[4], requeue, {"ended_at": store.NOW}, {"attempt": 5}),
    ]
    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session, session.begin():
            store.lock_calls(session, ids)
            moved = store.apply_transitions(session, moves)
    finally:
        engine.dispose()
    assert moved == {ids[0], ids[1], ids[3], ids[4]}
    rows = stack.sql(
        "SELECT id, status, outcome, duration_s, attempt_history, due_at > now() + interval "
        "'50 seconds', ended_at FROM calls WHERE id = ANY(%s) ORDER BY position",
        ids,
    )
    assert rows[0][1:5] == ("cancelled", "dnc", None, [{"attempt": 1}])
    assert rows[1][1:5] == ("cancelled", "x", 7, [{"attempt": 2}])
    assert rows[2][1:5] == ("pending", None, None, [])  # its guard did not hold
    for row, attempt in ((rows[3], 4), (rows[4], 5)):
        assert row[1:5] == ("pending", None, None, [{"attempt": attempt}])
        assert row[5] is True  # due in a minute
        assert row[6] is None  # a requeued call shows no end, whatever it was given
    assert rows[5][1:5] == ("pending", None, None, [])  # not moved at all


def test_machines_whose_action_was_lost_are_found_for_the_tick(stack: Stack):
    client = stack.client(new_api_key(stack))
    agent_id, number_id = create_agent(client), register_number(client)
    later = int(time.time()) + 86_400  # never dialed during the test
    batches = {
        behavior: submit(
            client,
            agent_id,
            number_id,
            recipients(3, "+1415556", 10 * position),
            scheduled_time_unix=later,
            voicemail_behavior=behavior,
            voicemail_message="Hello",
        ).json()["id"]
        for position, behavior in enumerate(("hang_up", "leave_message", "connect_agent"))
    }
    # Each batch's calls: live with a machine verdict and no news for a minute, the same with
    # the action taken, and one with a verdict just in.
    for batch_id in batches.values():
        stack.sql(
            "UPDATE calls SET status = 'in_progress', answered_by = 'machine_end_beep', "
            "updated_at = now() - interval '60 seconds', voicemail_action = CASE position "
            "WHEN 1 THEN 'hung_up' END WHERE batch_id = %s",
            batch_id,
        )
        stack.sql(
            "UPDATE calls SET updated_at = now() WHERE batch_id = %s AND position = 2", batch_id
        )
    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session, session.begin():
            found = calls_repo.machines_left_unanswered(session, after_s=30, limit=1000)
    finally:
        engine.dispose()
    ours = stack.sql(
        "SELECT id, batch_id, position FROM calls WHERE batch_id = ANY(%s)", list(batches.values())
    )
    expected = {
        call_id
        for call_id, batch_id, position in ours
        if position == 0 and batch_id in (batches["hang_up"], batches["leave_message"])
    }
    assert {call_id for call_id, _, _ in ours} & set(found) == expected
