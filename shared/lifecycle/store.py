"""The only code that writes a status or a counter: each write is a guarded UPDATE that applies
a transition ``shared.lifecycle.plans`` decided (a call moves only from the status it was
decided from; a batch's counters move in the transaction of the call transitions they
count). Reads that lock rows for a transition live here too."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.lifecycle.moves import NOW, Move, apply_transitions
from shared.lifecycle.plans import (
    CLAIM,
    RELEASE,
    BulkMove,
    CallSnapshot,
    CounterDeltas,
    RetryPolicy,
    orphan_move,
)
from shared.lifecycle.states import (
    SQL_BATCH_OPEN,
    SQL_BATCH_RUNNING,
    BatchStatus,
    CallStatus,
)
from shared.models import Batch

__all__ = ["NOW", "Move", "apply_transitions"]

_PENDING = CallStatus.PENDING.value
_DIALING = CallStatus.DIALING.value
_IN_PROGRESS = BatchStatus.IN_PROGRESS.value
_COMPLETED = BatchStatus.COMPLETED.value


# ---------------------------------------------------------------------------------------------
# Calls


class LockedCall(NamedTuple):
    """A call row locked for a transition: what decides it, and where it counts."""

    snapshot: CallSnapshot
    batch_id: str
    workspace_id: str


def _locked(row: Any) -> LockedCall:
    snapshot = CallSnapshot(
        status=CallStatus(row.status),
        provider_call_sid=row.provider_call_sid,
        first_dispatched=row.first_dispatched_at is not None,
        attempts=row.attempts,
        previous_sids=frozenset(
            e["provider_call_sid"] for e in row.attempt_history if e.get("provider_call_sid")
        ),
        retry=RetryPolicy.from_json(row.retry_policy),
        answered_by=row.answered_by,
        voicemail_action=row.voicemail_action,
    )
    return LockedCall(snapshot, row.batch_id, row.workspace_id)


# The columns of a call a transition is decided from, with its batch's retry policy.
_LOCK_CALLS = PreparedStatement(
    "switchboard_lock_calls",
    "SELECT c.id, c.status, c.provider_call_sid, c.first_dispatched_at, c.attempts, "
    "c.batch_id, c.workspace_id, c.attempt_history, c.answered_by, c.voicemail_action, "
    "b.retry_policy "
    "FROM calls c JOIN batches b ON b.id = c.batch_id WHERE c.id = ANY(:ids) "
    "ORDER BY c.id FOR UPDATE OF c",
    (("ids", "text[]"),),
)


def lock_calls(session: Session, call_ids: list[str]) -> dict[str, LockedCall]:
    """Lock these call rows in id order (so two transactions locking several never deadlock);
    each one's snapshot, its batch and its workspace."""
    rows = session.execute(_LOCK_CALLS.statement(session), {"ids": call_ids})
    return {row.id: _locked(row) for row in rows}


def lock_call(session: Session, call_id: str) -> LockedCall | None:
    """Lock the call row for a transition; its snapshot (with its batch's retry policy)."""
    return lock_calls(session, [call_id]).get(call_id)


_CLAIM = PreparedStatement(
    "switchboard_claim_call",
    f"UPDATE calls c SET status = '{CLAIM.to_status.value}', claimed_at = now(), "
    "claim_token = :token, checked_at = NULL, updated_at = now(), rendered_prompt = :prompt, "
    "rendered_first_message = :first_message, "
    "rendered_override = CAST(:override AS jsonb) "
    "FROM batches b LEFT JOIN phone_numbers p ON p.id = b.phone_number_id "
    f"WHERE c.id = :id AND c.status = '{CLAIM.from_status.value}' AND c.due_at <= now() "
    f"AND b.id = c.batch_id AND {SQL_BATCH_RUNNING} "
    "RETURNING c.id, c.batch_id, c.workspace_id, c.phone_number, "
    "b.telephony_call_config, b.calling_window, b.timezone, p.credentials_ref, "
    # Whether the batch's provider has left dials unprocessed since its last accepted one: an
    # accepted dial then ends that run (shared/provider_outage.py).
    "b.first_unreachable_at IS NOT NULL AS provider_unreachable, "
    # Checked right before dialing, in the claim itself: the do-not-call list (the number may
    # have been listed since submit) and this week's dials of the number.
    "EXISTS (SELECT 1 FROM dnc_numbers d WHERE d.workspace_id = c.workspace_id "
    "AND d.phone_number = c.phone_number) AS do_not_call, "
    "ARRAY(SELECT l.dialed_at FROM dial_log l WHERE l.workspace_id = c.workspace_id "
    "AND l.phone_number = c.phone_number AND l.dialed_at > now() - interval '7 days' "
    "ORDER BY l.dialed_at) AS week_of_dials, "
    # What the dial asks the provider's answering machine detection for.
    "b.voicemail_behavior",
    (
        ("id", "text"),
        ("token", "text"),
        ("prompt", "text"),
        ("first_message", "text"),
        ("override", "text"),
    ),
)


class ClaimedCall(NamedTuple):
    """A call just claimed for its dial: what dialing it needs (``_CLAIM``'s columns)."""

    id: str
    batch_id: str
    workspace_id: str
    phone_number: str | None
    telephony_call_config: dict[str, Any] | None
    calling_window: dict[str, Any] | None
    timezone: str | None
    credentials_ref: str | None
    provider_unreachable: bool
    do_not_call: bool
    week_of_dials: list[datetime]
    voicemail_behavior: str


def claim_for_dial(
    call_id: str,
    claim_token: str,
    prompt: str,
    first_message: str,
    override: dict[str, Any] | None,
) -> ClaimedCall | None:
    """pending → dialing (``plans.CLAIM``), only while the call is due and its batch runs,
    keeping the rendered prompt, first message and override the call is to be made with. A
    transaction of its own (one statement in autocommit mode): everything that may undo the
    claim runs in a later one, as for any claim that was committed.

    Returns what dialing needs (the call, its batch's settings and provider credentials,
    whether the number is on the do-not-call list, when it was dialed in the last 7 days), or
    None when another delivery of the same message, a cancel, or a due time in the future got
    there first.
    """
    rows = _CLAIM.run_alone(
        {
            "id": call_id,
            "token": claim_token,
            "prompt": prompt,
            "first_message": first_message,
            "override": None if override is None else json.dumps(override),
        }
    )
    return ClaimedCall._make(rows[0]) if rows else None


def release_claim(session: Session, call_id: str, claim_token: str, delay_s: float) -> bool:
    """dialing → pending (``plans.RELEASE``), due after ``delay_s``, for a dial that never
    reached the provider; False when the claim is no longer ``claim_token``'s."""
    result = session.execute(
        text(
            f"UPDATE calls SET status = '{RELEASE.to_status.value}', claim_token = NULL, "
            "enqueued_at = NULL, due_at = now() + make_interval(secs => :delay), "
            f"updated_at = now() WHERE id = :id AND status = '{RELEASE.from_status.value}' "
            "AND claim_token = :token"
        ),
        {"id": call_id, "token": claim_token, "delay": delay_s},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# The batch's calls in a status that no claim is taking right now: a cancel, a resume or a
# failing batch holds the batch row and passes over a call a claim has locked rather than wait
# for it. A call skipped here is dialing once its claim commits, or pending still if the claim
# did not take it after all; the tick finalises pending calls left in a cancelled or failed
# batch (finalise_orphans).
_UNLOCKED_OF_BATCH = (
    "SELECT id FROM calls WHERE batch_id = :batch_id AND status = :from_status "
    "AND (CAST(:outcomes AS text[]) IS NULL OR outcome = ANY(:outcomes)) "
    "FOR UPDATE SKIP LOCKED"
)
# What a call that becomes pending again no longer shows (its last attempt's record).
_RESET_ATTEMPT = (
    "provider_call_sid = NULL, provider_status = NULL, caller_number = NULL, "
    "answered_at = NULL, duration_s = NULL, error_code = NULL, error_message = NULL, "
    "claim_token = NULL, due_at = now(), enqueued_at = now(), ended_at = NULL"
)


def move_batch_calls(session: Session, batch_id: str, move: BulkMove) -> list[str]:
    """Move every call of the batch that ``move`` applies to, as it says; their ids. The
    caller moves the counters by ``move.deltas(len(ids))`` in the same transaction
    (``effects.Effects.bulk_moved``)."""
    ended = "ended_at = now()" if move.to_status != CallStatus.PENDING else _RESET_ATTEMPT
    result = session.execute(
        text(
            f"UPDATE calls SET status = :to_status, outcome = :outcome, {ended}, "
            f"updated_at = now() WHERE id IN ({_UNLOCKED_OF_BATCH}) RETURNING id"
        ),
        {
            "batch_id": batch_id,
            "from_status": move.from_status.value,
            "to_status": move.to_status.value,
            "outcome": move.outcome.value if move.outcome else None,
            "outcomes": sorted(o.value for o in move.outcomes) if move.outcomes else None,
        },
    )
    return [row.id for row in result]


class Orphan(NamedTuple):
    """A pending call made final as its ended batch's calls were."""

    call_id: str
    batch_id: str
    move: BulkMove


def finalise_orphans(session: Session, within_s: float, limit: int) -> list[Orphan]:
    """Pending calls of batches cancelled or failed in the last ``within_s`` seconds (left by
    a claim that did not take them while the batch ended), made final as their batch's calls
    were (``plans.orphan_move``)."""
    cancelled, failed = orphan_move(BatchStatus.CANCELLED), orphan_move(BatchStatus.FAILED)
    rows = session.execute(
        text(
            "UPDATE calls c SET status = CASE WHEN b.status = :cancelled_batch "
            "THEN :cancelled_status ELSE :failed_status END, outcome = CASE "
            "WHEN b.status = :cancelled_batch THEN :cancelled_outcome ELSE :failed_outcome END, "
            "ended_at = now(), updated_at = now() FROM batches b WHERE b.id = c.batch_id "
            "AND c.id IN (SELECT c2.id FROM batches b2 JOIN calls c2 ON c2.batch_id = b2.id "
            "WHERE b2.status IN (:cancelled_batch, :failed_batch) "
            "AND b2.last_updated_at > now() - make_interval(secs => :within) "
            "AND c2.status = :pending LIMIT :limit FOR UPDATE OF c2 SKIP LOCKED) "
            "RETURNING c.id, c.batch_id, b.status AS batch_status"
        ),
        {
            "within": within_s,
            "limit": limit,
            "pending": _PENDING,
            "cancelled_batch": BatchStatus.CANCELLED.value,
            "failed_batch": BatchStatus.FAILED.value,
            "cancelled_status": cancelled.to_status.value,
            "failed_status": failed.to_status.value,
            "cancelled_outcome": str(cancelled.outcome),
            "failed_outcome": str(failed.outcome),
        },
    )
    return [
        Orphan(row.id, row.batch_id, orphan_move(BatchStatus(row.batch_status))) for row in rows
    ]


# ---------------------------------------------------------------------------------------------
# Batches

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
