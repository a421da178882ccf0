"""What dispatch reads and marks of calls: what a dial renders and dials under, what the tick
re-drives and looks up, what reconcile, hang-up and the answering machine need (their status
moves only through ``shared.lifecycle.store``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Row, Table, func, select, text
from sqlalchemy.orm import Session

from shared.lifecycle.states import (
    SQL_AT_PROVIDER,
    SQL_BATCH_RUNNING,
    SQL_LIVE,
    BatchStatus,
    CallStatus,
    sql_list,
)
from shared.models import Call

# Core (not ORM) constructs on the hot path: an ORM-enabled UPDATE costs about a millisecond
# of Python per statement, several times the round trip it makes.
CALLS = cast(Table, Call.__table__)


calls = CALLS.c


_PENDING = CallStatus.PENDING.value

# Calls the provider has that have not been answered yet.
_RINGING = sql_list({CallStatus.DISPATCHED, CallStatus.INITIATED})


def mark_batch_calls_enqueued(session: Session, batch_id: str) -> list[str]:
    """The batch's due pending calls, stamped as published now (the caller publishes them)."""
    rows = session.execute(
        text(
            "UPDATE calls SET enqueued_at = now() "
            "WHERE id IN (SELECT id FROM calls WHERE batch_id = :batch_id "
            f"AND status = '{_PENDING}' AND due_at <= now() FOR UPDATE SKIP LOCKED) "
            "RETURNING id, position"
        ),
        {"batch_id": batch_id},
    )
    return [row.id for row in sorted(rows, key=lambda r: r.position)]


# The batch's caller-ID pool as E.164 numbers, in order (``b`` the batch, ``p`` its first
# number; a batch stored before pools existed has only ``p``).
_CALLER_POOL = (
    "COALESCE(NULLIF(ARRAY(SELECT pn.phone_number FROM unnest(b.phone_number_ids) "
    "WITH ORDINALITY AS pool(id, n) JOIN phone_numbers pn ON pn.id = pool.id "
    "ORDER BY pool.n), '{}'), ARRAY[p.phone_number])"
)


_RENDER_INPUTS = text(
    "SELECT c.id, c.batch_id, c.workspace_id, c.client_data, c.phone_number, "
    "b.prompt_template, b.first_message_template, b.target_concurrency_limit, "
    "b.calling_window, b.timezone, "
    f"{_CALLER_POOL} AS caller_numbers, p.credentials_ref, p.provider, "
    f"{SQL_BATCH_RUNNING} AS running "
    "FROM calls c JOIN batches b ON b.id = c.batch_id "
    "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = ANY(:ids)"
)


class RenderInputs(NamedTuple):
    """A call as its dial message reads it, before the claim (``_RENDER_INPUTS``' columns)."""

    id: str
    batch_id: str
    workspace_id: str
    client_data: dict[str, Any] | None
    phone_number: str | None
    prompt_template: str
    first_message_template: str
    target_concurrency_limit: int | None
    calling_window: dict[str, Any] | None
    timezone: str | None
    caller_numbers: list[str | None]
    credentials_ref: str | None
    provider: str | None  # the caller number's provider (None: no number)
    running: bool


def render_inputs(session: Session, call_ids: Sequence[str]) -> dict[str, RenderInputs]:
    """What these calls' prompts are rendered from (fixed at submit: their client data and
    their batches' templates), the live-call and pacing limits they dial under, their calling
    windows and whether their batches run, by call id."""
    rows = session.execute(_RENDER_INPUTS, {"ids": list(call_ids)})
    return {row.id: RenderInputs._make(row) for row in rows}


def redrive_candidates(
    session: Session, *, stale_enqueued_after_s: float | None, limit: int
) -> list[Row[Any]]:
    """Due pending calls of running batches with no live message, locked for this transaction
    (id, batch_id, workspace_id, the batch's target_concurrency_limit, and its caller number's
    provider and credentials_ref), oldest due first.

    Never-published calls (deferred ones coming due) always qualify; with
    ``stale_enqueued_after_s`` so do calls published longer ago than that (lost messages).
    """
    condition = "c.enqueued_at IS NULL"
    params: dict[str, Any] = {"limit": limit}
    if stale_enqueued_after_s is not None:
        condition += " OR c.enqueued_at < now() - make_interval(secs => :age)"
        params["age"] = stale_enqueued_after_s
    return list(
        session.execute(
            text(
                "SELECT c.id, c.batch_id, c.workspace_id, b.target_concurrency_limit, "
                "p.provider, p.credentials_ref FROM calls c JOIN batches b ON b.id = c.batch_id "
                "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id "
                f"WHERE c.status = '{_PENDING}' AND c.due_at <= now() AND {SQL_BATCH_RUNNING} "
                f"AND ({condition}) ORDER BY c.due_at LIMIT :limit FOR UPDATE OF c SKIP LOCKED"
            ),
            params,
        )
    )


def mark_enqueued(session: Session, call_ids: Sequence[str]) -> None:
    """Stamp these calls as published now (their dial messages go out after commit)."""
    if call_ids:
        session.execute(
            text("UPDATE calls SET enqueued_at = now() WHERE id = ANY(:ids)"),
            {"ids": list(call_ids)},
        )


def stale_live_calls(
    session: Session,
    *,
    dialing_after_s: float,
    ringing_grace_s: float,
    default_ringing_s: float,
    answered_after_s: float,
    recheck_after_s: float,
    limit: int,
) -> list[str]:
    """Calls to look up at the provider, stamped as checked now: claims older than
    ``dialing_after_s`` (the dial's answer never came); calls accepted but not answered that
    have heard nothing for their batch's ring timeout plus ``ringing_grace_s``; answered
    calls that have heard nothing for ``answered_after_s``. A call checked less than
    ``recheck_after_s`` ago waits."""
    rows = session.execute(
        text(
            "UPDATE calls SET checked_at = now() WHERE id IN ("
            "SELECT c.id FROM calls c JOIN batches b ON b.id = c.batch_id "
            f"WHERE c.status IN {SQL_LIVE} "
            "AND (c.checked_at IS NULL "
            "OR c.checked_at < now() - make_interval(secs => :recheck)) AND ("
            f"(c.status = '{CallStatus.DIALING.value}' "
            "AND c.claimed_at < now() - make_interval(secs => :dialing)) "
            f"OR (c.status IN {_RINGING} AND c.updated_at < now() "
            "- make_interval(secs => COALESCE(CAST(b.telephony_call_config "
            "->> 'ringing_timeout_secs' AS double precision), :ringing) + :grace)) "
            f"OR (c.status = '{CallStatus.IN_PROGRESS.value}' "
            "AND c.updated_at < now() - make_interval(secs => :answered))"
            ") ORDER BY c.updated_at LIMIT :limit FOR UPDATE OF c SKIP LOCKED) RETURNING id"
        ),
        {
            "dialing": dialing_after_s,
            "ringing": default_ringing_s,
            "grace": ringing_grace_s,
            "answered": answered_after_s,
            "recheck": recheck_after_s,
            "limit": limit,
        },
    )
    return [row.id for row in rows]


class ReconcileRow(NamedTuple):
    """What reconciling a call needs (``reconcile_row``' columns)."""

    status: str
    batch_id: str
    workspace_id: str
    claimed_at: datetime | None
    claim_token: str | None
    phone_number: str | None
    provider_call_sid: str | None
    caller_numbers: list[str | None]
    credentials_ref: str | None
    provider: str | None
    earlier_sids: list[str]


def reconcile_row(session: Session, call_id: str) -> ReconcileRow | None:
    """What reconciling a call with its provider needs, with the provider SIDs of its earlier
    attempts (``earlier_sids``), which are never this attempt's call."""
    row = session.execute(
        text(
            "SELECT c.status, c.batch_id, c.workspace_id, c.claimed_at, c.claim_token, "
            f"c.phone_number, c.provider_call_sid, {_CALLER_POOL} AS caller_numbers, "
            "p.credentials_ref, p.provider, ARRAY(SELECT e ->> 'provider_call_sid' "
            "FROM jsonb_array_elements(c.attempt_history) AS e "
            "WHERE e ->> 'provider_call_sid' IS NOT NULL) AS earlier_sids "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()
    return None if row is None else ReconcileRow._make(row)


def live_in_cancelled_batches(session: Session, call_ids: Sequence[str]) -> list[str]:
    """Those of ``call_ids`` that are live at the provider in a batch that was cancelled."""
    if not call_ids:
        return []
    rows = session.execute(
        text(
            "SELECT c.id FROM calls c JOIN batches b ON b.id = c.batch_id "
            f"WHERE c.id = ANY(:ids) AND b.status = '{BatchStatus.CANCELLED.value}' "
            f"AND c.status IN {SQL_AT_PROVIDER}"
        ),
        {"ids": list(call_ids)},
    )
    return [row.id for row in rows]


def defer_unclaimed(session: Session, deferrals: Sequence[tuple[str, float]]) -> None:
    """Published calls that were not claimed (no live-call slot, or a pacing slot too far
    away) wait their delay (call id, seconds) more, as calls never published: the tick
    publishes them again once they are due."""
    session.execute(
        text(
            "UPDATE calls SET enqueued_at = NULL, updated_at = now(), "
            "due_at = GREATEST(due_at, now() + make_interval(secs => v.delay)) "
            "FROM unnest(CAST(:ids AS text[]), CAST(:delays AS double precision[])) "
            f"AS v(id, delay) WHERE calls.id = v.id AND calls.status = '{_PENDING}'"
        ),
        {"ids": [call_id for call_id, _ in deferrals], "delays": [d for _, d in deferrals]},
    )


def agent_config_row(session: Session, call_id: str) -> Row[Any] | None:
    """The rendered configuration of a call and its agent's settings."""
    return session.execute(
        text(
            "SELECT c.id, c.batch_id, b.agent_id, c.rendered_prompt, c.rendered_first_message, "
            "c.rendered_override, c.client_data, a.language, a.llm, a.voice "
            "FROM calls c JOIN batches b ON b.id = c.batch_id JOIN agents a ON a.id = b.agent_id "
            "WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()


def sid_taken(session: Session, sid: str, except_call_id: str) -> bool:
    """Whether another call row already owns this provider call."""
    return (
        session.execute(
            select(Call.id).where(Call.provider_call_sid == sid, Call.id != except_call_id)
        ).first()
        is not None
    )


class HangUpRow(NamedTuple):
    """What ending a live call at the provider needs (``hangup_row``' columns)."""

    status: str
    provider_call_sid: str | None
    credentials_ref: str | None
    provider: str | None


def hangup_row(session: Session, call_id: str) -> HangUpRow | None:
    """What ending a live call at the provider needs."""
    row = session.execute(
        text(
            "SELECT c.status, c.provider_call_sid, p.credentials_ref, p.provider "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()
    return None if row is None else HangUpRow._make(row)


_LOG_DIALS = text(
    "INSERT INTO dial_log (workspace_id, phone_number) "
    "SELECT workspace_id, phone_number FROM calls WHERE id = ANY(:ids)"
)


def log_dials(session: Session, call_ids: list[str]) -> None:
    """Record provider-accepted dials of these calls' numbers (for the frequency cap)."""
    session.execute(_LOG_DIALS, {"ids": call_ids})


def count_by_status_and_outcome(session: Session) -> list[tuple[str, str | None, int]]:
    """How many calls there are per (status, outcome), over every batch: one GROUP BY."""
    rows = session.execute(
        select(calls.status, calls.outcome, func.count()).group_by(calls.status, calls.outcome)
    ).all()
    return [(str(status), outcome, int(count)) for status, outcome, count in rows]


# The answering machine detection's verdicts: recorded on the calls whose current attempt they
# are about (the provider call SID matches, or none is recorded yet and the SID is no earlier
# attempt's) while they are live; the rows recorded, with what acting on them needs.
_RECORD_ANSWERED_BY = text(
    "UPDATE calls c SET answered_by = v.answered_by, updated_at = now() "
    "FROM unnest(CAST(:ids AS text[]), CAST(:sids AS text[]), CAST(:verdicts AS text[])) "
    "AS v(id, sid, answered_by), batches b "
    "WHERE c.id = v.id AND b.id = c.batch_id "
    f"AND c.status IN {SQL_LIVE} "
    "AND (c.provider_call_sid = v.sid OR (c.provider_call_sid IS NULL "
    "AND NOT c.attempt_history @> jsonb_build_array(jsonb_build_object("
    "'provider_call_sid', v.sid)))) "
    "RETURNING c.id, v.sid, c.answered_by, b.voicemail_behavior"
)


def record_answered_by(
    session: Session, verdicts: Sequence[tuple[str, str, str]]
) -> list[Row[Any]]:
    """Record each (call id, provider call SID, verdict) on its call, if it is about the
    call's live attempt; those recorded (id, sid, answered_by, the batch's
    voicemail_behavior). The calls must be locked already when there are several."""
    if not verdicts:
        return []
    ids, sids, answers = (list(column) for column in zip(*verdicts, strict=True))
    return list(
        session.execute(_RECORD_ANSWERED_BY, {"ids": ids, "sids": sids, "verdicts": answers})
    )


def machines_left_unanswered(session: Session, after_s: float, limit: int) -> list[str]:
    """Live calls a machine answered whose voicemail behaviour acts on it, with nothing done
    about it yet and no news for ``after_s``: their ``calls.answer_machine`` message was lost
    (a broker restart) or its provider request failed."""
    return list(
        session.scalars(
            text(
                "SELECT c.id FROM calls c JOIN batches b ON b.id = c.batch_id "
                f"WHERE c.status IN {SQL_AT_PROVIDER} "
                "AND c.answered_by LIKE 'machine%' AND c.voicemail_action IS NULL "
                "AND b.voicemail_behavior IN ('hang_up', 'leave_message') "
                "AND c.updated_at < now() - make_interval(secs => :after) "
                "ORDER BY c.updated_at LIMIT :limit"
            ),
            {"after": after_s, "limit": limit},
        )
    )


class MachineActionRow(NamedTuple):
    """What acting on a machine verdict needs (``machine_action_row``' columns)."""

    status: str
    provider_call_sid: str | None
    answered_by: str | None
    voicemail_action: str | None
    client_data: dict[str, Any] | None
    voicemail_behavior: str
    voicemail_message_template: str
    credentials_ref: str | None
    provider: str | None


def machine_action_row(session: Session, call_id: str) -> MachineActionRow | None:
    """What acting on a machine verdict needs: the call's state, verdict and action taken so
    far, its batch's voicemail behaviour and message template, its dynamic data, and the
    provider credentials."""
    row = session.execute(
        text(
            "SELECT c.status, c.provider_call_sid, c.answered_by, c.voicemail_action, "
            "c.client_data, b.voicemail_behavior, b.voicemail_message_template, "
            "p.credentials_ref, p.provider "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()
    return None if row is None else MachineActionRow._make(row)


def record_voicemail_action(session: Session, call_id: str, sid: str, action: str) -> bool:
    """Record what was done about the machine on the call's attempt ``sid``; False when the
    call has moved on to another attempt."""
    result = session.execute(
        text(
            "UPDATE calls SET voicemail_action = :action, updated_at = now() "
            "WHERE id = :id AND provider_call_sid = :sid"
        ),
        {"id": call_id, "sid": sid, "action": action},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
