"""The call half of the store: the locks a transition takes, the claim and its release, and
the guarded single and bulk moves of calls (a call moves only from the status it was decided
from)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.lifecycle.moves import NOW, Move, apply_transitions
from shared.lifecycle.plans import (
    CLAIM,
    RELEASE,
    BulkMove,
    CallSnapshot,
    RetryPolicy,
    orphan_move,
)
from shared.lifecycle.states import SQL_BATCH_RUNNING, BatchStatus, CallStatus
from shared.telephony import registry

__all__ = ["NOW", "Move", "apply_transitions"]

_PENDING = CallStatus.PENDING.value
_DIALING = CallStatus.DIALING.value


class LockedCall(NamedTuple):
    """A call row locked for a transition: what decides it, and where it counts (its batch,
    its workspace, and the provider account its batch's caller number dials through, as
    ``registry.account_key`` names it)."""

    snapshot: CallSnapshot
    batch_id: str
    workspace_id: str
    account: str | None


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
    account = registry.account_key(row.provider, row.credentials_ref)
    return LockedCall(snapshot, row.batch_id, row.workspace_id, account)


# The columns of a call a transition is decided from, with its batch's retry policy.
_LOCK_CALLS = PreparedStatement(
    "switchboard_lock_calls",
    "SELECT c.id, c.status, c.provider_call_sid, c.first_dispatched_at, c.attempts, "
    "c.batch_id, c.workspace_id, c.attempt_history, c.answered_by, c.voicemail_action, "
    "b.retry_policy, p.provider, p.credentials_ref "
    "FROM calls c JOIN batches b ON b.id = c.batch_id "
    "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = ANY(:ids) "
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
    "b.telephony_call_config, b.calling_window, b.timezone, p.credentials_ref, p.provider, "
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
    provider: str | None  # the caller number's provider
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
