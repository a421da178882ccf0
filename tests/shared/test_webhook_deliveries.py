"""The delivery rows' queries on the real database: deferring spends no attempt, and the tick
takes due deliveries in turns across workspaces."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from shared.webhooks import repository as webhooks_repo
from tests.conftest import new_api_key
from tests.support import Stack


@pytest.fixture
def quiet_stack(make_stack) -> Stack:
    """A stack with nothing that publishes or sends deliveries: the test does."""
    stack: Stack = make_stack(workers=0, beat=False)
    return stack


@pytest.fixture
def session(quiet_stack: Stack) -> Iterator[Session]:
    engine = create_engine(quiet_stack.database_url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _endpoint(stack: Stack) -> tuple[str, str]:
    """A new workspace's endpoint: (workspace id, endpoint id)."""
    with stack.client(new_api_key(stack)) as client:
        response = client.post("/v1/voiceai/webhooks", json={"url": "http://127.0.0.1:9/x"})
        assert response.status_code == 201, response.text
        endpoint_id = response.json()["id"]
    [(workspace_id,)] = stack.sql(
        "SELECT workspace_id FROM webhook_endpoints WHERE id = %s", endpoint_id
    )
    return workspace_id, endpoint_id


def _deliveries(
    stack: Stack, workspace_id: str, endpoint_id: str, count: int, due_seconds_ago: int
) -> list[str]:
    rows = stack.sql(
        "INSERT INTO webhook_deliveries (id, workspace_id, endpoint_id, event_id, event_type, "
        "payload, next_attempt_at, created_at) SELECT %s || '-' || g, %s, %s, 'evt-' || g, "
        "'call.ended', '{}'::jsonb, now() - make_interval(secs => %s + g / 1000.0), now() "
        "FROM generate_series(1, %s) g RETURNING id",
        endpoint_id,
        workspace_id,
        endpoint_id,
        due_seconds_ago,
        count,
    )
    return [row[0] for row in rows]


def _row(stack: Stack, delivery_id: str) -> dict[str, Any]:
    [row] = stack.sql(
        "SELECT status, attempts, enqueued_at IS NULL, next_attempt_at - now(), last_error "
        "FROM webhook_deliveries WHERE id = %s",
        delivery_id,
    )
    names = ("status", "attempts", "unpublished", "due_in", "last_error")
    return dict(zip(names, row, strict=True))


def test_a_backlog_takes_turns_with_other_workspaces(quiet_stack: Stack, session: Session):
    busy_workspace, busy_endpoint = _endpoint(quiet_stack)
    quiet_workspace, quiet_endpoint = _endpoint(quiet_stack)
    # The backlog has been due for longer: by due time alone it would fill the tick.
    _deliveries(quiet_stack, busy_workspace, busy_endpoint, 500, due_seconds_ago=600)
    quiet = _deliveries(quiet_stack, quiet_workspace, quiet_endpoint, 3, due_seconds_ago=1)

    with session.begin():
        first = webhooks_repo.due_deliveries(session, redrive_after_s=60, limit=50)
    assert len(first) == 50
    # Published in turns: the quiet workspace's three come within the first six.
    assert set(quiet) <= set(first[:6])

    with session.begin():
        second = webhooks_repo.due_deliveries(session, redrive_after_s=60, limit=1000)
    # At most DUE_PER_WORKSPACE of one workspace per tick; none published twice.
    assert len(second) == webhooks_repo.DUE_PER_WORKSPACE
    assert not set(first) & set(second)
    assert _published(quiet_stack) == {
        busy_workspace: 47 + webhooks_repo.DUE_PER_WORKSPACE,
        quiet_workspace: 3,
    }

    # Published long ago and still due (their messages presumed lost, or waiting for a slot):
    # fewer of a workspace are re-driven per tick.
    quiet_stack.sql("UPDATE webhook_deliveries SET enqueued_at = now() - interval '1 hour'")
    with session.begin():
        redriven = webhooks_repo.due_deliveries(session, redrive_after_s=60, limit=1000)
    assert collections.Counter(_workspace_of(quiet_stack, redriven)) == {
        busy_workspace: webhooks_repo.REDRIVE_PER_WORKSPACE,
        quiet_workspace: 3,
    }


def _published(stack: Stack) -> collections.Counter[str]:
    return collections.Counter(
        row[0]
        for row in stack.sql(
            "SELECT workspace_id FROM webhook_deliveries WHERE enqueued_at IS NOT NULL"
        )
    )


def _workspace_of(stack: Stack, delivery_ids: list[str]) -> list[str]:
    rows = stack.sql("SELECT workspace_id FROM webhook_deliveries WHERE id = ANY(%s)", delivery_ids)
    return [row[0] for row in rows]


def test_a_deferred_delivery_spends_no_attempt_and_is_left_to_the_tick(
    quiet_stack: Stack, session: Session
):
    workspace_id, endpoint_id = _endpoint(quiet_stack)
    [delivery] = _deliveries(quiet_stack, workspace_id, endpoint_id, 1, due_seconds_ago=1)
    quiet_stack.sql("UPDATE webhook_deliveries SET enqueued_at = now() WHERE id = %s", delivery)
    with session.begin():
        assert webhooks_repo.delivery_target(session, delivery).due
        webhooks_repo.defer_delivery(session, delivery, 30.0, 24 * 3600.0, "not sent: busy")
    row = _row(quiet_stack, delivery)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["unpublished"]
    assert 29 <= row["due_in"].total_seconds() <= 30 and row["last_error"] is None
    with session.begin():
        # Not due now: neither taken again nor published.
        assert not webhooks_repo.delivery_target(session, delivery).due
        assert webhooks_repo.due_deliveries(session, redrive_after_s=60, limit=10) == []


def test_a_delivery_deferred_past_its_retry_window_fails(quiet_stack: Stack, session: Session):
    workspace_id, endpoint_id = _endpoint(quiet_stack)
    [delivery] = _deliveries(quiet_stack, workspace_id, endpoint_id, 1, due_seconds_ago=1)
    with session.begin():
        webhooks_repo.defer_delivery(session, delivery, 600.0, 300.0, "not sent: breaker open")
    row = _row(quiet_stack, delivery)
    assert row["status"] == "failed" and row["attempts"] == 0
    assert row["last_error"] == "not sent: breaker open"


def test_the_backlog_counts_pending_deliveries_and_how_long_the_oldest_has_been_due(
    quiet_stack: Stack, session: Session
):
    assert webhooks_repo.pending_backlog(session) == webhooks_repo.PendingBacklog(0, 0.0)
    session.rollback()
    _deliveries(quiet_stack, *_endpoint(quiet_stack), 3, due_seconds_ago=120)
    # Due in ten minutes (a backoff, an open breaker): pending, but not late.
    _deliveries(quiet_stack, *_endpoint(quiet_stack), 2, due_seconds_ago=-600)
    # Delivered long after it was due: neither pending nor late.
    [delivered] = _deliveries(quiet_stack, *_endpoint(quiet_stack), 1, due_seconds_ago=3600)
    quiet_stack.sql("UPDATE webhook_deliveries SET status = 'delivered' WHERE id = %s", delivered)

    backlog = webhooks_repo.pending_backlog(session)
    assert backlog.pending == 5
    assert 120 <= backlog.oldest_due_s < 180
    text = httpx.get(quiet_stack.api_url + "/metrics", timeout=10).text
    assert "\nswitchboard_webhook_deliveries_pending 5.0\n" in text
    [oldest] = re.findall(r"^switchboard_webhook_oldest_due_seconds (\S+)$", text, re.MULTILINE)
    assert 120 <= float(oldest) < 180
