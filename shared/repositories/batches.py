"""Batches: inserting them with their recipients, reading them, and moving their counters."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, func, insert, select, text
from sqlalchemy.orm import Session

from shared.callstate import CounterDeltas
from shared.db import PreparedStatement
from shared.models import Agent, Batch, IdempotencyKey

CALL_COPY_COLUMNS = (
    "id",
    "batch_id",
    "workspace_id",
    "position",
    "recipient_id",
    "phone_number",
    "whatsapp_user_id",
    "client_data",
    "status",
    "outcome",
    "contact_id",
    "request_metadata",
)

_BATCH_COLUMNS = (
    Batch.id,
    Batch.workspace_id,
    Batch.name,
    Batch.agent_id,
    Agent.name.label("agent_name"),
    Batch.phone_number_id,
    Batch.phone_number_ids,
    Batch.phone_provider,
    Batch.status,
    Batch.created_at,
    Batch.scheduled_at,
    Batch.last_updated_at,
    Batch.whatsapp_params,
    Batch.timezone,
    Batch.telephony_call_config,
    Batch.target_concurrency_limit,
    Batch.total_calls_scheduled,
    Batch.total_calls_dispatched,
    Batch.total_calls_finished,
    Batch.retry_count,
    Batch.failure_reason,
    Batch.retry_policy,
    Batch.calling_window,
    Batch.paused_at,
    Batch.paused_reason,
    Batch.voicemail_behavior,
    Batch.voicemail_message_template,
)


def insert_batch(session: Session, values: dict[str, Any]) -> None:
    """Insert the batch row."""
    session.execute(insert(Batch).values(**values))


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_calls(session: Session, rows: Iterable[Sequence[Any]]) -> None:
    """Bulk-insert call rows (CALL_COPY_COLUMNS order) with COPY, in the session's transaction."""
    cell = _copy_text
    buffer = io.StringIO("".join(["\t".join([cell(v) for v in row]) + "\n" for row in rows]))
    dbapi_connection: Any = session.connection().connection.dbapi_connection
    with dbapi_connection.cursor() as cursor:
        cursor.copy_expert(f"COPY calls ({', '.join(CALL_COPY_COLUMNS)}) FROM STDIN", buffer)


def get_batch_row(session: Session, workspace_id: str, batch_id: str) -> Row[Any] | None:
    """The batch with its agent's name, if it is in this workspace."""
    return session.execute(
        select(*_BATCH_COLUMNS)
        .join(Agent, Agent.id == Batch.agent_id)
        .where(Batch.id == batch_id, Batch.workspace_id == workspace_id)
    ).one_or_none()


def list_batch_rows(
    session: Session, workspace_id: str, limit: int, before_id: str | None, agent_id: str | None
) -> list[Row[Any]]:
    """Newest first (ids are time-ordered); ``before_id`` continues after that batch."""
    stmt = (
        select(*_BATCH_COLUMNS)
        .join(Agent, Agent.id == Batch.agent_id)
        .where(Batch.workspace_id == workspace_id)
    )
    if before_id is not None:
        stmt = stmt.where(Batch.id < before_id)
    if agent_id is not None:
        stmt = stmt.where(Batch.agent_id == agent_id)
    return list(session.execute(stmt.order_by(Batch.id.desc()).limit(limit)).all())


def dashboard_batch_rows(session: Session, workspace_id: str, limit: int) -> list[Any]:
    """The newest ``limit`` batches with their counters, for the dashboard."""
    return list(
        session.execute(
            select(
                Batch.id,
                Batch.name,
                Batch.status,
                Batch.paused_at,
                Batch.paused_reason,
                Batch.created_at,
                Batch.total_calls_scheduled,
                Batch.total_calls_dispatched,
                Batch.total_calls_finished,
                Batch.retry_count,
                Batch.total_recipients,
                Batch.calls_final,
            )
            .where(Batch.workspace_id == workspace_id)
            .order_by(Batch.id.desc())
            .limit(limit)
        ).all()
    )


def fan_out_chunk_size(session: Session, batch_id: str) -> int | None:
    """The batch's own chunk size for publishing its dial messages, if it set one."""
    return session.execute(
        select(Batch.fan_out_chunk_size).where(Batch.id == batch_id)
    ).scalar_one_or_none()


def start_batch_if_due(session: Session, batch_id: str) -> str | None:
    """pending → in_progress (or straight to completed when no recipient is left to call) when
    its time has come; the new status, or None if it was not pending or not due."""
    result = session.execute(
        text(
            "UPDATE batches SET status = CASE WHEN calls_final >= total_recipients "
            "THEN 'completed' ELSE 'in_progress' END, started_at = now(), "
            "last_updated_at = now() "
            "WHERE id = :id AND status = 'pending' AND scheduled_at <= now() "
            "AND paused_at IS NULL RETURNING status"
        ),
        {"id": batch_id},
    )
    return result.scalar_one_or_none()


def claim_due_batches(session: Session, limit: int) -> list[tuple[str, str]]:
    """Start due pending batches, as (id, new status); SKIP LOCKED lets concurrent ticks take
    disjoint batches."""
    rows = session.execute(
        text(
            "UPDATE batches SET status = CASE WHEN calls_final >= total_recipients "
            "THEN 'completed' ELSE 'in_progress' END, started_at = now(), "
            "last_updated_at = now() "
            "WHERE id IN (SELECT id FROM batches WHERE status = 'pending' "
            "AND scheduled_at <= now() AND paused_at IS NULL ORDER BY scheduled_at LIMIT :limit "
            "FOR NO KEY UPDATE SKIP LOCKED) RETURNING id, status"
        ),
        {"limit": limit},
    )
    return [(row.id, row.status) for row in rows]


# Every transaction that moves calls moves its batch's counters.
_MOVE_COUNTERS = PreparedStatement(
    "switchboard_move_counters",
    "UPDATE batches SET "
    "total_calls_dispatched = total_calls_dispatched + :dispatched, "
    "total_calls_finished = total_calls_finished + :finished, "
    "retry_count = retry_count + :retries, "
    "calls_final = calls_final + :final, "
    "last_updated_at = now(), "
    "status = CASE WHEN status = 'in_progress' "
    "AND calls_final + :final >= total_recipients THEN 'completed' ELSE status END "
    "WHERE id = :id RETURNING status = 'completed' "
    "AND calls_final - :final < total_recipients AS completed_now",
    (
        ("id", "text"),
        ("dispatched", "integer"),
        ("finished", "integer"),
        ("retries", "integer"),
        ("final", "integer"),
    ),
)


def move_counters(session: Session, batch_id: str, deltas: CounterDeltas) -> bool:
    """Add ``deltas`` to the batch's counters; completes the batch when every call is final.
    True when this move completed it.

    Called only in the transaction of the call transition that the deltas count, so each
    counter moves exactly once per transition.
    """
    row = session.execute(
        _MOVE_COUNTERS.statement(session),
        {
            "id": batch_id,
            "dispatched": deltas.dispatched,
            "finished": deltas.finished,
            "retries": deltas.retries,
            "final": deltas.final,
        },
    ).one()
    return bool(row.completed_now)


def fail_batch(session: Session, batch_id: str, reason: str) -> bool:
    """pending/in_progress → failed; False if it had already ended."""
    result = session.execute(
        text(
            "UPDATE batches SET status = 'failed', failure_reason = :reason, "
            "last_updated_at = now() "
            "WHERE id = :id AND status IN ('pending', 'in_progress')"
        ),
        {"id": batch_id, "reason": reason},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def find_idempotency_key(
    session: Session, workspace_id: str, key: str, ttl_s: int
) -> IdempotencyKey | None:
    """A key used within the last ``ttl_s`` seconds."""
    return session.execute(
        select(IdempotencyKey).where(
            IdempotencyKey.workspace_id == workspace_id,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at > func.now() - timedelta(seconds=ttl_s),
        )
    ).scalar_one_or_none()


def claim_idempotency_key(
    session: Session, workspace_id: str, key: str, request_hash: str, batch_id: str, ttl_s: int
) -> bool:
    """Take the key for ``batch_id``; False if another request holds it (waits for it first).

    A key older than ``ttl_s`` is taken over, as if it had never been used.
    """
    row = session.execute(
        text(
            "INSERT INTO idempotency_keys (workspace_id, key, request_hash, batch_id) "
            "VALUES (:ws, :key, :hash, :batch) "
            "ON CONFLICT (workspace_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
            "batch_id = EXCLUDED.batch_id, created_at = now() "
            "WHERE idempotency_keys.created_at <= now() - make_interval(secs => :ttl) "
            "RETURNING batch_id"
        ),
        {"ws": workspace_id, "key": key, "hash": request_hash, "batch": batch_id, "ttl": ttl_s},
    ).one_or_none()
    return row is not None


def lock_batch(session: Session, workspace_id: str, batch_id: str) -> Any:
    """The batch's status and pause mark, locked against concurrent control requests.

    FOR NO KEY UPDATE, like every UPDATE of a batch: a plain FOR UPDATE would also block the
    foreign-key checks of call updates, and deadlock against claims in flight.
    """
    return session.execute(
        select(Batch.status, Batch.paused_at)
        .where(Batch.id == batch_id, Batch.workspace_id == workspace_id)
        .with_for_update(key_share=True)
    ).one_or_none()


def set_batch_status(session: Session, batch_id: str, status: str) -> None:
    """Set the (locked) batch's status."""
    session.execute(
        text("UPDATE batches SET status = :status, last_updated_at = now() WHERE id = :id"),
        {"id": batch_id, "status": status},
    )


def set_paused(session: Session, batch_id: str, reason: str | None) -> None:
    """Pause the (locked) batch for ``reason``, or resume it (None): resuming also ends its
    run of dials the provider did not process, so the next failure starts a new one."""
    session.execute(
        text(
            "UPDATE batches SET paused_at = CASE WHEN :paused THEN now() END, "
            "paused_reason = :reason, first_unreachable_at = NULL, "
            "last_updated_at = now() WHERE id = :id"
        ),
        {"id": batch_id, "paused": reason is not None, "reason": reason},
    )


def note_unreachable(session: Session, batch_id: str) -> float | None:
    """A dial of the batch the provider did not process: the batch's run of them starts now
    unless one is under way; how many seconds ago it started (None for no such batch)."""
    return session.execute(
        text(
            "UPDATE batches SET first_unreachable_at = coalesce(first_unreachable_at, now()) "
            "WHERE id = :id "
            "RETURNING extract(epoch FROM now() - first_unreachable_at)::float8"
        ),
        {"id": batch_id},
    ).scalar_one_or_none()


def pause_running(session: Session, batch_id: str, reason: str) -> bool:
    """Pause the batch for ``reason`` if it is running and not paused yet; whether it was."""
    row = session.execute(
        text(
            "UPDATE batches SET paused_at = now(), paused_reason = :reason, "
            "last_updated_at = now() "
            "WHERE id = :id AND status = 'in_progress' AND paused_at IS NULL RETURNING id"
        ),
        {"id": batch_id, "reason": reason},
    ).one_or_none()
    return row is not None


def clear_unreachable(session: Session, batch_id: str) -> None:
    """The provider accepted a dial of the batch: its run of unprocessed dials is over."""
    session.execute(
        text(
            "UPDATE batches SET first_unreachable_at = NULL "
            "WHERE id = :id AND first_unreachable_at IS NOT NULL"
        ),
        {"id": batch_id},
    )


def batch_status(session: Session, batch_id: str) -> str | None:
    """The batch's status."""
    return session.execute(select(Batch.status).where(Batch.id == batch_id)).scalar_one_or_none()


_RUNNING_STATUS = PreparedStatement(
    "switchboard_batch_running_status",
    "SELECT status, paused_at IS NOT NULL AS paused FROM batches WHERE id = :id",
    (("id", "text"),),
)


def running_status_now(batch_id: str) -> str | None:
    """``running`` while calls of the batch may be placed, else its status (or ``paused``),
    read in a transaction of its own (one round trip, autocommit): what a dial checks right
    before its provider request."""
    rows = _RUNNING_STATUS.run_alone({"id": batch_id})
    if not rows:
        return None
    row = rows[0]
    if row.status == "in_progress" and not row.paused:
        return "running"
    return "paused" if row.paused else str(row.status)


def status_of_call_batch(session: Session, call_id: str) -> str | None:
    """The status of the batch a call belongs to, locked until the transaction ends, so that a
    cancel cannot commit between this read and what the caller does with it.

    FOR NO KEY UPDATE, not FOR SHARE: the caller may go on to move the batch's counters, and
    two transactions that share-lock a row and then both update it deadlock.
    """
    return session.execute(
        text(
            "SELECT b.status FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.id = :id "
            "FOR NO KEY UPDATE OF b"
        ),
        {"id": call_id},
    ).scalar_one_or_none()


def count_by_status(session: Session) -> dict[str, int]:
    """How many batches there are per status: one GROUP BY."""
    rows = session.execute(select(Batch.status, func.count()).group_by(Batch.status)).all()
    return {str(status): int(count) for status, count in rows}


def delete_batch(session: Session, workspace_id: str, batch_id: str) -> int:
    """Delete the batch, its calls and the rows that point at them (webhook deliveries about
    the batch or its calls, status reports of its calls, an idempotency key naming it): how
    many calls went. The dial log is per number and stays."""
    params = {"workspace_id": workspace_id, "batch_id": batch_id}
    session.execute(
        text(
            "DELETE FROM webhook_deliveries WHERE workspace_id = :workspace_id "
            "AND payload -> 'data' ->> 'batch_id' = :batch_id"
        ),
        params,
    )
    session.execute(
        text(
            "DELETE FROM status_inbox WHERE call_id IN "
            "(SELECT id FROM calls WHERE batch_id = :batch_id)"
        ),
        params,
    )
    session.execute(
        text(
            "DELETE FROM idempotency_keys "
            "WHERE workspace_id = :workspace_id AND batch_id = :batch_id"
        ),
        params,
    )
    calls = session.execute(
        text("DELETE FROM calls WHERE workspace_id = :workspace_id AND batch_id = :batch_id"),
        params,
    )
    session.execute(
        text("DELETE FROM batches WHERE workspace_id = :workspace_id AND id = :batch_id"), params
    )
    return int(calls.rowcount)  # type: ignore[attr-defined]
