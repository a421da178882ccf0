"""Batches: reading them and their recipients, idempotency keys, the provider-outage marks and
deleting them (their status and counters are written by ``shared.lifecycle.store`` alone)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.lifecycle.plans import RunState, run_state
from shared.lifecycle.states import BatchStatus
from shared.models import Agent, Batch, IdempotencyKey
from shared.schemas import BatchStatus as ShownBatchStatus
from shared.schemas import PhoneProvider

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


class BatchRow(NamedTuple):
    """A batch as the API shows it, with its agent's name (``_BATCH_COLUMNS``)."""

    id: str
    workspace_id: str
    name: str
    agent_id: str
    agent_name: str
    phone_number_id: str | None
    phone_number_ids: list[str]
    phone_provider: PhoneProvider | None
    status: ShownBatchStatus
    created_at: datetime
    scheduled_at: datetime
    last_updated_at: datetime
    whatsapp_params: dict[str, Any] | None
    timezone: str | None
    telephony_call_config: dict[str, Any] | None
    target_concurrency_limit: int | None
    total_calls_scheduled: int
    total_calls_dispatched: int
    total_calls_finished: int
    retry_count: int
    failure_reason: str | None
    retry_policy: dict[str, Any] | None
    calling_window: dict[str, Any] | None
    paused_at: datetime | None
    paused_reason: str | None
    voicemail_behavior: str
    voicemail_message_template: str


def get_batch_row(session: Session, workspace_id: str, batch_id: str) -> BatchRow | None:
    """The batch with its agent's name, if it is in this workspace."""
    row = session.execute(
        select(*_BATCH_COLUMNS)
        .join(Agent, Agent.id == Batch.agent_id)
        .where(Batch.id == batch_id, Batch.workspace_id == workspace_id)
    ).one_or_none()
    return None if row is None else BatchRow._make(row)


def list_batch_rows(
    session: Session, workspace_id: str, limit: int, before_id: str | None, agent_id: str | None
) -> list[BatchRow]:
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
    return [
        BatchRow._make(row) for row in session.execute(stmt.order_by(Batch.id.desc()).limit(limit))
    ]


class DashboardRow(NamedTuple):
    """A batch's counters, for the dashboard."""

    id: str
    name: str
    status: ShownBatchStatus
    paused_at: datetime | None
    paused_reason: str | None
    created_at: datetime
    total_calls_scheduled: int
    total_calls_dispatched: int
    total_calls_finished: int
    retry_count: int
    total_recipients: int
    calls_final: int


def dashboard_batch_rows(session: Session, workspace_id: str, limit: int) -> list[DashboardRow]:
    """The newest ``limit`` batches with their counters, for the dashboard."""
    rows = session.execute(
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
    )
    return [DashboardRow._make(row) for row in rows]


def fan_out_chunk_size(session: Session, batch_id: str) -> int | None:
    """The batch's own chunk size for publishing its dial messages, if it set one."""
    return session.execute(
        select(Batch.fan_out_chunk_size).where(Batch.id == batch_id)
    ).scalar_one_or_none()


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


class LockedBatch(NamedTuple):
    """A batch's status and pause mark, locked for a control request."""

    status: str
    paused_at: datetime | None


def lock_batch(session: Session, workspace_id: str, batch_id: str) -> LockedBatch | None:
    """The batch's status and pause mark, locked against concurrent control requests.

    FOR NO KEY UPDATE, like every UPDATE of a batch: a plain FOR UPDATE would also block the
    foreign-key checks of call updates, and deadlock against claims in flight.
    """
    row = session.execute(
        select(Batch.status, Batch.paused_at)
        .where(Batch.id == batch_id, Batch.workspace_id == workspace_id)
        .with_for_update(key_share=True)
    ).one_or_none()
    return None if row is None else LockedBatch._make(row)


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


def clear_unreachable(session: Session, batch_id: str) -> None:
    """The provider accepted a dial of the batch: its run of unprocessed dials is over."""
    session.execute(
        text(
            "UPDATE batches SET first_unreachable_at = NULL "
            "WHERE id = :id AND first_unreachable_at IS NOT NULL"
        ),
        {"id": batch_id},
    )


def batch_status(session: Session, batch_id: str) -> BatchStatus | None:
    """The batch's status."""
    status = session.execute(select(Batch.status).where(Batch.id == batch_id)).scalar_one_or_none()
    return None if status is None else BatchStatus(status)


_RUNNING_STATUS = PreparedStatement(
    "switchboard_batch_running_status",
    "SELECT status, paused_at IS NOT NULL AS paused FROM batches WHERE id = :id",
    (("id", "text"),),
)


def run_state_now(batch_id: str) -> RunState:
    """Whether calls of the batch may be placed now, read in a transaction of its own (one
    round trip, autocommit): what a dial checks right before its provider request."""
    rows = _RUNNING_STATUS.run_alone({"id": batch_id})
    if not rows:
        return run_state(None, paused=False)
    return run_state(BatchStatus(rows[0].status), paused=rows[0].paused)


def status_of_call_batch(session: Session, call_id: str) -> BatchStatus | None:
    """The status of the batch a call belongs to, locked until the transaction ends, so that a
    cancel cannot commit between this read and what the caller does with it.

    FOR NO KEY UPDATE, not FOR SHARE: the caller may go on to move the batch's counters, and
    two transactions that share-lock a row and then both update it deadlock.
    """
    status = session.execute(
        text(
            "SELECT b.status FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.id = :id "
            "FOR NO KEY UPDATE OF b"
        ),
        {"id": call_id},
    ).scalar_one_or_none()
    return None if status is None else BatchStatus(status)


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
