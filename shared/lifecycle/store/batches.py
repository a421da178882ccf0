"""The batch half of the store: the batch insert (with its calls), start, the counter moves
(which complete a batch: the completion rule is written once, here), fail, status and pause
marks. Each write is a guarded UPDATE a plan of ``shared.lifecycle.plans`` decided."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.lifecycle.plans import CounterDeltas
from shared.lifecycle.states import SQL_BATCH_OPEN, SQL_BATCH_RUNNING, BatchStatus
from shared.models import Batch

_IN_PROGRESS = BatchStatus.IN_PROGRESS.value
_COMPLETED = BatchStatus.COMPLETED.value

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


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def insert_batch(
    session: Session, values: dict[str, Any], calls: Sequence[Sequence[Any]], excluded: int
) -> None:
    """Insert a new batch, pending, with its calls (COPY, rows in ``CALL_COPY_COLUMNS`` order:
    pending, or cancelled when excluded at submit); ``excluded`` of them are final already."""
    session.execute(
        insert(Batch).values(
            **values,
            status=BatchStatus.PENDING.value,
            total_recipients=len(calls),
            total_calls_scheduled=len(calls),
            calls_final=excluded,
        )
    )
    cell = _copy_text
    buffer = io.StringIO("".join(["\t".join([cell(v) for v in row]) + "\n" for row in calls]))
    dbapi_connection: Any = session.connection().connection.dbapi_connection
    with dbapi_connection.cursor() as cursor:
        cursor.copy_expert(f"COPY calls ({', '.join(CALL_COPY_COLUMNS)}) FROM STDIN", buffer)


# The batch-completion rule, with ``final`` the batch's final calls counted so far.
def _all_final(final: str) -> str:
    return f"{final} >= total_recipients"


# pending → in_progress, or completed when no call is left to make (``plans.status_on_start``).
_START = (
    f"UPDATE batches SET status = CASE WHEN {_all_final('calls_final')} THEN '{_COMPLETED}' "
    f"ELSE '{_IN_PROGRESS}' END, started_at = now(), last_updated_at = now() "
)
_DUE = f"status = '{BatchStatus.PENDING.value}' AND scheduled_at <= now() AND paused_at IS NULL"


def start_batch_if_due(session: Session, batch_id: str) -> BatchStatus | None:
    """Start the batch when it is pending and due; its new status, or None."""
    status = session.execute(
        text(f"{_START} WHERE id = :id AND {_DUE} RETURNING status"), {"id": batch_id}
    ).scalar_one_or_none()
    return None if status is None else BatchStatus(status)


def claim_due_batches(session: Session, limit: int) -> list[tuple[str, BatchStatus]]:
    """Start due pending batches, as (id, new status); SKIP LOCKED lets concurrent ticks take
    disjoint batches."""
    rows = session.execute(
        text(
            f"{_START} WHERE id IN (SELECT id FROM batches WHERE {_DUE} "
            "ORDER BY scheduled_at LIMIT :limit FOR NO KEY UPDATE SKIP LOCKED) RETURNING id, status"
        ),
        {"limit": limit},
    )
    return [(row.id, BatchStatus(row.status)) for row in rows]


# Every transaction that moves calls moves its batch's counters; a running batch whose calls
# are all final is completed by the same statement.
_MOVE_COUNTERS = PreparedStatement(
    "switchboard_move_counters",
    "UPDATE batches SET "
    "total_calls_dispatched = total_calls_dispatched + :dispatched, "
    "total_calls_finished = total_calls_finished + :finished, "
    "retry_count = retry_count + :retries, "
    "calls_final = calls_final + :final, "
    "last_updated_at = now(), "
    f"status = CASE WHEN status = '{_IN_PROGRESS}' "
    f"AND {_all_final('calls_final + :final')} THEN '{_COMPLETED}' ELSE status END "
    f"WHERE id = :id RETURNING status = '{_COMPLETED}' "
    "AND NOT " + _all_final("calls_final - :final") + " AS completed_now",
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

    Called only in the transaction of the call transitions that the deltas count, so each
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
    """pending/in_progress → failed (``plans.can_fail``); False if it had already ended."""
    result = session.execute(
        text(
            f"UPDATE batches SET status = '{BatchStatus.FAILED.value}', failure_reason = :reason, "
            f"last_updated_at = now() WHERE id = :id AND status IN {SQL_BATCH_OPEN}"
        ),
        {"id": batch_id, "reason": reason},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_batch_status(session: Session, batch_id: str, status: BatchStatus) -> None:
    """Set the (locked) batch's status, as a control plan decided it (cancel: cancelled;
    manual retry: in_progress)."""
    session.execute(
        text("UPDATE batches SET status = :status, last_updated_at = now() WHERE id = :id"),
        {"id": batch_id, "status": BatchStatus(status).value},
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


def pause_running(session: Session, batch_id: str, reason: str) -> bool:
    """Pause the batch for ``reason`` if it is running and not paused yet; whether it was."""
    row = session.execute(
        text(
            "UPDATE batches b SET paused_at = now(), paused_reason = :reason, "
            f"last_updated_at = now() WHERE id = :id AND {SQL_BATCH_RUNNING} RETURNING id"
        ),
        {"id": batch_id, "reason": reason},
    ).one_or_none()
    return row is not None
