"""Batches: reading them and their recipients, idempotency keys, the provider-outage marks and
deleting them (their status and counters are written by ``shared.lifecycle.store`` alone)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select, text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.lifecycle.plans import RunState, run_state
from shared.lifecycle.states import SQL_AT_PROVIDER, BatchStatus
from shared.models import Agent, Batch, Call, IdempotencyKey

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


def recipient_rows(session: Session, batch_id: str) -> list[Any]:
    """Every call of the batch in submission order."""
    return list(session.execute(_recipients_query(batch_id)).all())


def stream_recipient_rows(
    session: Session, batch_id: str, limit: int | None = None, chunk: int = 1000
) -> Iterator[Any]:
    """The first ``limit`` (or every) calls of the batch in submission order, fetched
    ``chunk`` rows at a time through a server-side cursor."""
    query = _recipients_query(batch_id)
    if limit is not None:
        query = query.limit(limit)
    yield from session.execute(query, execution_options={"yield_per": chunk})


def _recipients_query(batch_id: str) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Call.id,
            Call.recipient_id,
            Call.phone_number,
            Call.whatsapp_user_id,
            Call.status,
            Call.outcome,
            Call.attempts,
            Call.created_at,
            Call.updated_at,
            Call.provider_call_sid,
            Call.caller_number,
            Call.client_data,
            Call.attempt_history,
            Call.duration_s,
            Call.request_metadata,
        )
        .where(Call.batch_id == batch_id)
        .order_by(Call.position)
    )


def status_counts(session: Session, batch_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """(batch_id, status, count) for the calls of these batches, in one GROUP BY."""
    if not batch_ids:
        return []
    rows = session.execute(
        select(Call.batch_id, Call.status, func.count())
        .where(Call.batch_id.in_(batch_ids))
        .group_by(Call.batch_id, Call.status)
    ).all()
    return [(batch_id, status, count) for batch_id, status, count in rows]


def call_ids_of_batch(session: Session, batch_id: str) -> list[str]:
    """The batch's call ids in submission order."""
    return list(
        session.execute(
            select(Call.id).where(Call.batch_id == batch_id).order_by(Call.position)
        ).scalars()
    )


def live_call_ids(session: Session, batch_id: str) -> list[str]:
    """Calls of the batch the provider has and that have not ended."""
    rows = session.execute(
        text(f"SELECT id FROM calls WHERE batch_id = :batch_id AND status IN {SQL_AT_PROVIDER}"),
        {"batch_id": batch_id},
    )
    return [row.id for row in rows]


def contact_call_rows(session: Session, workspace_id: str, contact_id: str) -> list[Any]:
    """Every call placed to a contact, newest first."""
    return list(
        session.execute(
            select(
                Call.id,
                Call.batch_id,
                Call.status,
                Call.outcome,
                Call.attempts,
                Call.provider_call_sid,
                Call.created_at,
                Call.updated_at,
                Call.request_metadata,
            )
            .where(Call.workspace_id == workspace_id, Call.contact_id == contact_id)
            .order_by(Call.id.desc())
        ).all()
    )
