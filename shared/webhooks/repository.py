"""Webhook endpoints and their deliveries.

A delivery row is one event for one endpoint. Rows are inserted by the transaction of the
change that causes the event (INSERT ... SELECT, one statement whatever the number of calls),
claimed for sending with a lease, and marked delivered or due again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select, text, update
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.models import WebhookDelivery, WebhookEndpoint

EVENT_CALL_ENDED = "call.ended"
EVENT_BATCH_COMPLETED = "batch.completed"
EVENT_BATCH_PAUSED = "batch.paused"
EVENT_TYPES = (EVENT_CALL_ENDED, EVENT_BATCH_COMPLETED, EVENT_BATCH_PAUSED)


def _sql_id(prefix: str) -> str:
    """A SQL expression making an id like shared.ids.new_id: time-ordered, 80 random bits."""
    return (
        f"'{prefix}_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), "
        "12, '0') || substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)"
    )


# Inserts one delivery per (event, subscribed endpoint). The event id is drawn once per event
# (a MATERIALIZED CTE), so every endpoint and every retry of it sees the same id.
_INSERT_DELIVERIES = (
    "INSERT INTO webhook_deliveries (id, workspace_id, endpoint_id, event_id, event_type, "
    "payload, enqueued_at) "
    f"SELECT {_sql_id('whd')}, e.workspace_id, e.id, ev.event_id, CAST(:type AS text), "
    "jsonb_build_object('id', ev.event_id, 'type', CAST(:type AS text), "
    "'created_at_unix', extract(epoch FROM now())::bigint, 'data', ev.data), now() "
    "FROM ev JOIN webhook_endpoints e ON e.workspace_id = ev.workspace_id AND e.enabled "
    "AND CAST(:type AS text) = ANY(e.event_types) RETURNING id, workspace_id"
)

# Run by every transaction that ends calls.
_CALL_ENDED = PreparedStatement(
    "switchboard_call_ended",
    "WITH ev AS MATERIALIZED (SELECT "
    f"{_sql_id('evt')} AS event_id, c.workspace_id, jsonb_build_object("
    "'batch_id', c.batch_id, 'call_id', c.id, 'recipient_id', c.recipient_id, "
    "'contact', jsonb_build_object('id', ct.id, 'phone_number', c.phone_number, "
    "'whatsapp_user_id', c.whatsapp_user_id, 'first_name', ct.first_name, "
    "'last_name', ct.last_name, 'email', ct.email), "
    "'status', c.status, 'outcome', c.outcome, 'duration_s', c.duration_s, "
    "'provider_call_sid', c.provider_call_sid, 'caller_number', c.caller_number, "
    "'attempts', c.attempts, 'requestMetadata', c.request_metadata, "
    "'ended_at_unix', extract(epoch FROM coalesce(c.ended_at, now()))::bigint) AS data "
    "FROM calls c LEFT JOIN contacts ct ON ct.id = c.contact_id "
    "WHERE c.id = ANY(:ids) AND EXISTS (SELECT 1 FROM webhook_endpoints w "
    "WHERE w.workspace_id = c.workspace_id AND w.enabled)) " + _INSERT_DELIVERIES,
    (("ids", "text[]"), ("type", "text")),
)

_BATCH_COMPLETED = (
    "WITH ev AS MATERIALIZED (SELECT "
    f"{_sql_id('evt')} AS event_id, b.workspace_id, jsonb_build_object("
    "'batch_id', b.id, 'name', b.name, 'agent_id', b.agent_id, 'status', b.status, "
    "'total_calls_scheduled', b.total_calls_scheduled, "
    "'total_calls_dispatched', b.total_calls_dispatched, "
    "'total_calls_finished', b.total_calls_finished, 'retry_count', b.retry_count, "
    "'completed_at_unix', extract(epoch FROM now())::bigint) AS data "
    "FROM batches b WHERE b.id = :batch_id AND EXISTS (SELECT 1 FROM webhook_endpoints w "
    "WHERE w.workspace_id = b.workspace_id AND w.enabled)) " + _INSERT_DELIVERIES
)


_BATCH_PAUSED = (
    "WITH ev AS MATERIALIZED (SELECT "
    f"{_sql_id('evt')} AS event_id, b.workspace_id, jsonb_build_object("
    "'batch_id', b.id, 'name', b.name, 'agent_id', b.agent_id, 'status', b.status, "
    "'paused', true, 'paused_reason', b.paused_reason, "
    "'total_calls_scheduled', b.total_calls_scheduled, "
    "'total_calls_dispatched', b.total_calls_dispatched, "
    "'total_calls_finished', b.total_calls_finished, 'retry_count', b.retry_count, "
    "'paused_at_unix', extract(epoch FROM b.paused_at)::bigint) AS data "
    "FROM batches b WHERE b.id = :batch_id AND b.paused_at IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM webhook_endpoints w "
    "WHERE w.workspace_id = b.workspace_id AND w.enabled)) " + _INSERT_DELIVERIES
)


def add_call_ended(session: Session, call_ids: Sequence[str]) -> list[tuple[str, str]]:
    """A ``call.ended`` delivery per subscribed endpoint for each of these (final) calls:
    (delivery id, workspace id) of each."""
    if not call_ids:
        return []
    rows = session.execute(
        _CALL_ENDED.statement(session), {"ids": list(call_ids), "type": EVENT_CALL_ENDED}
    ).all()
    return [(row.id, row.workspace_id) for row in rows]


def add_batch_completed(session: Session, batch_id: str) -> list[tuple[str, str]]:
    """A ``batch.completed`` delivery per subscribed endpoint: (delivery id, workspace id)."""
    rows = session.execute(
        text(_BATCH_COMPLETED), {"batch_id": batch_id, "type": EVENT_BATCH_COMPLETED}
    ).all()
    return [(row.id, row.workspace_id) for row in rows]


def add_batch_paused(session: Session, batch_id: str) -> list[tuple[str, str]]:
    """A ``batch.paused`` delivery per subscribed endpoint, with the reason the (paused) batch
    records: (delivery id, workspace id)."""
    rows = session.execute(
        text(_BATCH_PAUSED), {"batch_id": batch_id, "type": EVENT_BATCH_PAUSED}
    ).all()
    return [(row.id, row.workspace_id) for row in rows]


def insert_endpoint(session: Session, values: dict[str, Any]) -> None:
    session.add(WebhookEndpoint(**values))


def list_endpoints(session: Session, workspace_id: str) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.enabled)
            .order_by(WebhookEndpoint.id)
        )
    )


def disable_endpoint(session: Session, workspace_id: str, endpoint_id: str) -> bool:
    """Stop sending to the endpoint; its undelivered deliveries end failed."""
    done = session.execute(
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.workspace_id == workspace_id,
            WebhookEndpoint.enabled,
        )
        .values(enabled=False)
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error="endpoint deleted")
    )
    return True


def list_deliveries(
    session: Session, workspace_id: str, limit: int, before_id: str | None, status: str | None
) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.workspace_id == workspace_id)
    if before_id:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    return list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))


def delivery_target(session: Session, delivery_id: str) -> Row[Any] | None:
    """Where a delivery goes (its endpoint and workspace), and whether it is ``due`` (pending,
    its time has come, its endpoint enabled); None for an unknown id."""
    return session.execute(
        text(
            "SELECT d.id, d.endpoint_id, d.workspace_id, (d.status = 'pending' "
            "AND d.next_attempt_at <= now() AND e.enabled) AS due FROM webhook_deliveries d "
            "JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = :id"
        ),
        {"id": delivery_id},
    ).one_or_none()


def defer_delivery(
    session: Session, delivery_id: str, delay_s: float, window_s: float, reason: str
) -> None:
    """Due again after ``delay_s`` without an attempt spent (its endpoint or workspace could
    not take it now); failed, with ``reason`` unless an attempt left a better one, when that
    is past the retry window."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET enqueued_at = NULL, "
            "next_attempt_at = now() + make_interval(secs => :delay), "
            "status = CASE WHEN now() + make_interval(secs => :delay) "
            "> created_at + make_interval(secs => :window) THEN 'failed' ELSE 'pending' END, "
            "last_error = CASE WHEN now() + make_interval(secs => :delay) "
            "> created_at + make_interval(secs => :window) "
            "THEN coalesce(last_error, :reason) ELSE last_error END "
            "WHERE id = :id AND status = 'pending' AND next_attempt_at <= now()"
        ),
        {"id": delivery_id, "delay": delay_s, "window": window_s, "reason": reason},
    )


def claim_delivery(session: Session, delivery_id: str, lease_s: float) -> Row[Any] | None:
    """Take a due delivery for one attempt: counted now, not due again until the lease ends
    (a worker that dies mid-request leaves it to be sent again, with the same event id)."""
    return session.execute(
        text(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, "
            "next_attempt_at = now() + make_interval(secs => :lease) "
            "FROM webhook_endpoints e WHERE d.id = :id AND d.status = 'pending' "
            "AND d.next_attempt_at <= now() AND e.id = d.endpoint_id AND e.enabled "
            "RETURNING d.id, d.event_id, d.event_type, d.payload, d.attempts, e.url, e.secret"
        ),
        {"id": delivery_id, "lease": lease_s},
    ).one_or_none()


def mark_delivered(session: Session, delivery_id: str, status_code: int) -> None:
    session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), "
            "last_status_code = :code, last_error = NULL WHERE id = :id AND status = 'pending'"
        ),
        {"id": delivery_id, "code": status_code},
    )


def mark_attempt_failed(
    session: Session,
    delivery_id: str,
    status_code: int | None,
    error: str,
    delay_s: float,
    window_s: float,
) -> None:
    """Due again after ``delay_s``; failed for good once that is past the retry window."""
    session.execute(
        text(
            "UPDATE webhook_deliveries SET last_status_code = :code, last_error = :error, "
            "enqueued_at = NULL, next_attempt_at = now() + make_interval(secs => :delay), "
            "status = CASE WHEN now() + make_interval(secs => :delay) "
            "> created_at + make_interval(secs => :window) THEN 'failed' ELSE 'pending' END "
            "WHERE id = :id AND status = 'pending'"
        ),
        {
            "id": delivery_id,
            "code": status_code,
            "error": error,
            "delay": delay_s,
            "window": window_s,
        },
    )


@dataclass(frozen=True)
class PendingBacklog:
    """Deliveries still pending, and how long the one due the longest has been due."""

    pending: int
    oldest_due_s: float


def pending_backlog(session: Session) -> PendingBacklog:
    """The webhook backlog, in one query over pending rows only (the partial index's)."""
    row = session.execute(
        text(
            "SELECT count(*) AS pending, COALESCE(EXTRACT(EPOCH FROM now() - "
            "min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0) AS oldest_due_s "
            "FROM webhook_deliveries WHERE status = 'pending'"
        )
    ).one()
    return PendingBacklog(int(row.pending), float(row.oldest_due_s))


# Per tick, at most this many deliveries of one workspace are published: a workspace whose
# deliveries keep coming back (its receivers are slow or its in-flight limit is reached) adds a
# bounded number of messages ahead of everyone else's. Fewer are re-driven (published before,
# their message presumed lost): most of those are waiting for a slot to be handed on, and a
# re-drive only confirms that they wait.
DUE_PER_WORKSPACE = 100
REDRIVE_PER_WORKSPACE = 25


def due_deliveries(
    session: Session,
    redrive_after_s: float,
    limit: int,
    per_workspace: int = DUE_PER_WORKSPACE,
    redrive_per_workspace: int = REDRIVE_PER_WORKSPACE,
) -> list[str]:
    """Pending deliveries that are due and not published lately, stamped as published now.

    Taken in turns across workspaces (every workspace's earliest, then every workspace's
    second, ...), at most ``per_workspace`` of each that were not published since they became
    due and ``redrive_per_workspace`` that were, so that one workspace's backlog never pushes
    another's deliveries out of the tick or behind it in the queue.
    """
    rows = session.execute(
        text(
            "WITH ranked AS (SELECT id, next_attempt_at, enqueued_at IS NULL AS fresh, "
            "row_number() OVER (PARTITION BY workspace_id, enqueued_at IS NULL "
            "ORDER BY next_attempt_at) AS turn FROM webhook_deliveries "
            "WHERE status = 'pending' AND next_attempt_at <= now() "
            "AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => :redrive))"
            "), chosen AS (SELECT d.id, r.turn, r.next_attempt_at FROM webhook_deliveries d "
            "JOIN (SELECT id, turn, next_attempt_at FROM ranked WHERE turn <= CASE WHEN fresh "
            "THEN :per_workspace ELSE :redrive_per_workspace END "
            "ORDER BY turn, next_attempt_at LIMIT :limit) r ON r.id = d.id "
            "FOR UPDATE OF d SKIP LOCKED) "
            "UPDATE webhook_deliveries d SET enqueued_at = now() FROM chosen c "
            "WHERE d.id = c.id RETURNING d.id, c.turn, c.next_attempt_at"
        ),
        {
            "redrive": redrive_after_s,
            "limit": limit,
            "per_workspace": per_workspace,
            "redrive_per_workspace": redrive_per_workspace,
        },
    ).all()
    return [row.id for row in sorted(rows, key=lambda row: (row.turn, row.next_attempt_at))]
