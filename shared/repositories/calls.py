"""Calls: one row per recipient. Every state change is a guarded UPDATE on ``status``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Select, Table, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.callstate import CallSnapshot, RetryPolicy, Transition
from shared.db import SQL_PARAMETER, PreparedStatement
from shared.models import Call

# Core (not ORM) constructs on the hot path: an ORM-enabled UPDATE costs about a millisecond
# of Python per statement, several times the round trip it makes.
CALLS = cast(Table, Call.__table__)
calls = CALLS.c


# The batch's pending calls that no claim is taking right now: a cancel, a resume or a failing
# batch holds the batch row and passes over a call a claim has locked rather than wait for it.
# A call skipped here is dialing once its claim commits, or pending still if the claim did not
# take it after all; the tick finalises pending calls left in a cancelled or failed batch
# (orphaned_pending_calls).
_PENDING_UNLOCKED = (
    "SELECT id FROM calls WHERE batch_id = :batch_id AND status = 'pending' FOR UPDATE SKIP LOCKED"
)


def mark_batch_calls_enqueued(session: Session, batch_id: str) -> list[str]:
    """The batch's due pending calls, stamped as published now (the caller publishes them)."""
    rows = session.execute(
        text(
            "UPDATE calls SET enqueued_at = now() "
            "WHERE id IN (SELECT id FROM calls WHERE batch_id = :batch_id "
            "AND status = 'pending' AND due_at <= now() FOR UPDATE SKIP LOCKED) "
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
    f"{_CALLER_POOL} AS caller_numbers, p.credentials_ref, "
    "b.status = 'in_progress' AND b.paused_at IS NULL AS running "
    "FROM calls c JOIN batches b ON b.id = c.batch_id "
    "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = ANY(:ids)"
)


def render_inputs(session: Session, call_ids: Sequence[str]) -> dict[str, Row[Any]]:
    """What these calls' prompts are rendered from (fixed at submit: their client data and
    their batches' templates), the live-call and pacing limits they dial under, their calling
    windows and whether their batches run, by call id."""
    rows = session.execute(_RENDER_INPUTS, {"ids": list(call_ids)})
    return {row.id: row for row in rows}


_CLAIM = PreparedStatement(
    "switchboard_claim_call",
    "UPDATE calls c SET status = 'dialing', claimed_at = now(), claim_token = :token, "
    "checked_at = NULL, updated_at = now(), rendered_prompt = :prompt, "
    "rendered_first_message = :first_message, "
    "rendered_override = CAST(:override AS jsonb) "
    "FROM batches b LEFT JOIN phone_numbers p ON p.id = b.phone_number_id "
    "WHERE c.id = :id AND c.status = 'pending' AND c.due_at <= now() "
    "AND b.id = c.batch_id AND b.status = 'in_progress' AND b.paused_at IS NULL "
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


def claim_for_dial(
    call_id: str,
    claim_token: str,
    prompt: str,
    first_message: str,
    override: dict[str, Any] | None,
) -> Any | None:
    """pending → dialing, only while the call is due and its batch in progress, keeping the
    rendered prompt, first message and override the call is to be made with. A transaction
    of its own (one statement in autocommit mode): everything that may undo the claim runs in
    a later one, as for any claim that was committed.

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
    return rows[0] if rows else None


LockedCall = tuple[CallSnapshot, str, str]


def _locked(row: Any) -> LockedCall:
    snapshot = CallSnapshot(
        status=row.status,
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
    return snapshot, row.batch_id, row.workspace_id


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


class _Now:
    """``now()`` in the database: what a value passed to apply_transition may be."""

    def __repr__(self) -> str:
        return "NOW"


NOW = _Now()

# apply_transitions' statements, by the columns they set and whether for one row: a call moves
# through a handful of shapes, and a prepared text statement costs a fraction of building an
# UPDATE construct.
_MOVE_STATEMENTS: dict[tuple[tuple[tuple[str, str], ...], bool], Any] = {}

# A requeued call: the next attempt is this row, due later (the tick publishes it then). What
# the row shows is the latest attempt's; the ended one is in attempt_history.
_REQUEUE_SETS = {
    "due_at": "now() + make_interval(secs => :requeue_delay_s)",
    "provider_call_sid": "NULL",
    "claim_token": "NULL",
    "enqueued_at": "NULL",
    "outcome": "NULL",
    "provider_status": "NULL",
    "caller_number": "NULL",
    "answered_at": "NULL",
    "ended_at": "NULL",
    "duration_s": "NULL",
    "error_code": "NULL",
    "error_message": "NULL",
    "answered_by": "NULL",
    "voicemail_action": "NULL",
}


@dataclass(frozen=True)
class Move:
    """A decided transition of one call: ``values`` are column values (``NOW`` for the
    database's clock); ``ended_attempt`` is appended to the call's attempt history."""

    call_id: str
    transition: Transition
    values: dict[str, Any]
    ended_attempt: dict[str, Any] | None = None


def _assignments(move: Move) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
    """The move's SET clause, as (column, SQL expression) pairs, and its parameters."""
    transition = move.transition
    params: dict[str, Any] = {
        "id": move.call_id,
        "from_status": transition.from_status,
        "to_status": transition.to_status,
        **move.values,
    }
    sets = {"status": ":to_status", "updated_at": "now()"}
    sets.update((name, "now()" if v is NOW else f":{name}") for name, v in move.values.items())
    if transition.requeue_delay_s is not None:
        sets.update(_REQUEUE_SETS)  # a value the row would have shown is left unused
        params["requeue_delay_s"] = transition.requeue_delay_s
    if move.ended_attempt is not None:
        sets["attempt_history"] = "attempt_history || CAST(:ended_attempt AS jsonb)"
        params["ended_attempt"] = json.dumps([move.ended_attempt])
    if transition.accepted:
        sets["dispatched_at"] = "now()"
        sets["first_dispatched_at"] = "COALESCE(first_dispatched_at, now())"
    if transition.counts_attempt:
        sets["attempts"] = "attempts + 1"
    return tuple(sets.items()), params


# The SQL types of a bulk move's parameters that are not columns of their own name.
_PARAMETER_TYPES = {
    "id": "text",
    "from_status": "text",
    "to_status": "text",
    "requeue_delay_s": "double precision",
    "ended_attempt": "text",
}


def _parameter_type(name: str) -> str:
    if name in _PARAMETER_TYPES:
        return _PARAMETER_TYPES[name]
    return str(CALLS.c[name].type.compile(dialect=postgresql.dialect()))


def _move_statement(shape: tuple[tuple[str, str], ...], several: bool) -> Any:
    """The UPDATE for moves of one shape: one row guarded by its status, or several, their
    parameters passed as one array per name and joined row by row, each guarded the same
    way."""
    key = (shape, several)
    statement = _MOVE_STATEMENTS.get(key)
    if statement is not None:
        return statement
    if not several:
        assignments = ", ".join(f"{column} = {value}" for column, value in shape)
        sql = f"UPDATE calls SET {assignments} WHERE id = :id AND status = :from_status"
    else:
        assignments = ", ".join(
            f"{column} = " + SQL_PARAMETER.sub(r"v.\1", value) for column, value in shape
        )
        names = _names(shape)
        arrays = ", ".join(f"CAST(:{name} AS {_parameter_type(name)}[])" for name in names)
        sql = (
            f"UPDATE calls SET {assignments} FROM unnest({arrays}) AS v({', '.join(names)}) "
            "WHERE calls.id = v.id AND calls.status = v.from_status RETURNING calls.id"
        )
    statement = _MOVE_STATEMENTS[key] = text(sql)
    return statement


def _names(shape: tuple[tuple[str, str], ...]) -> list[str]:
    """The parameters a shape's statement takes, in a fixed order."""
    names = ["id", "from_status"]
    for _, value in shape:
        names += [name for name in SQL_PARAMETER.findall(value) if name not in names]
    return names


def apply_transitions(session: Session, moves: Sequence[Move]) -> set[str]:
    """Move these calls as decided, each guarded by the status it was decided from; the ids
    of the calls that moved.

    Moves of the same shape (the columns they set) go in one statement. The calls must be
    distinct and, when there are several, already locked (lock_calls): one statement takes
    its rows in no set order.
    """
    shapes: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for move in moves:
        shape, params = _assignments(move)
        shapes.setdefault(shape, []).append(params)
    moved: set[str] = set()
    for shape, rows in shapes.items():
        if len(rows) == 1:
            result = session.execute(_move_statement(shape, False), rows[0])
            if result.rowcount:  # type: ignore[attr-defined]
                moved.add(rows[0]["id"])
            continue
        arrays = {name: [row[name] for row in rows] for name in _names(shape)}
        moved.update(session.execute(_move_statement(shape, True), arrays).scalars())
    return moved


def apply_transition(
    session: Session,
    call_id: str,
    transition: Transition,
    values: dict[str, Any],
    ended_attempt: dict[str, Any] | None = None,
) -> bool:
    """Move the call as decided, guarded by the status it was decided from."""
    return bool(apply_transitions(session, [Move(call_id, transition, values, ended_attempt)]))


def redrive_candidates(
    session: Session, *, stale_enqueued_after_s: float | None, limit: int
) -> list[Row[Any]]:
    """Due pending calls of running batches with no live message, locked for this transaction
    (id, batch_id, workspace_id, and the batch's target_concurrency_limit), oldest due first.

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
                "SELECT c.id, c.batch_id, c.workspace_id, b.target_concurrency_limit "
                "FROM calls c JOIN batches b ON b.id = c.batch_id "
                "WHERE c.status = 'pending' AND c.due_at <= now() AND b.status = 'in_progress' "
                "AND b.paused_at IS NULL "
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
            "WHERE c.status IN ('dialing', 'dispatched', 'initiated', 'in_progress') "
            "AND (c.checked_at IS NULL "
            "OR c.checked_at < now() - make_interval(secs => :recheck)) AND ("
            "(c.status = 'dialing' AND c.claimed_at < now() - make_interval(secs => :dialing)) "
            "OR (c.status IN ('dispatched', 'initiated') AND c.updated_at < now() "
            "- make_interval(secs => COALESCE(CAST(b.telephony_call_config "
            "->> 'ringing_timeout_secs' AS double precision), :ringing) + :grace)) "
            "OR (c.status = 'in_progress' "
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


def reconcile_row(session: Session, call_id: str) -> Row[Any] | None:
    """What reconciling a call with its provider needs, with the provider SIDs of its earlier
    attempts (``earlier_sids``), which are never this attempt's call."""
    return session.execute(
        text(
            "SELECT c.status, c.batch_id, c.workspace_id, c.claimed_at, c.claim_token, "
            f"c.phone_number, c.provider_call_sid, {_CALLER_POOL} AS caller_numbers, "
            "p.credentials_ref, ARRAY(SELECT e ->> 'provider_call_sid' "
            "FROM jsonb_array_elements(c.attempt_history) AS e "
            "WHERE e ->> 'provider_call_sid' IS NOT NULL) AS earlier_sids "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()


_SLOT_HOLDING = "('dialing', 'dispatched', 'initiated', 'in_progress')"


def slot_holders(session: Session) -> list[Row[Any]]:
    """Every call that holds a live-call slot (claimed or live): id, batch_id, workspace_id."""
    return list(
        session.execute(
            text(f"SELECT id, batch_id, workspace_id FROM calls WHERE status IN {_SLOT_HOLDING}")
        )
    )


def not_holding_slots(session: Session, call_ids: Sequence[str]) -> set[str]:
    """Those of ``call_ids`` that are neither claimed nor live (or do not exist)."""
    if not call_ids:
        return set()
    holding = session.execute(
        text(f"SELECT id FROM calls WHERE id = ANY(:ids) AND status IN {_SLOT_HOLDING}"),
        {"ids": list(call_ids)},
    )
    return set(call_ids) - {row.id for row in holding}


def live_in_cancelled_batches(session: Session, call_ids: Sequence[str]) -> list[str]:
    """Those of ``call_ids`` that are live at the provider in a batch that was cancelled."""
    if not call_ids:
        return []
    rows = session.execute(
        text(
            "SELECT c.id FROM calls c JOIN batches b ON b.id = c.batch_id "
            "WHERE c.id = ANY(:ids) AND b.status = 'cancelled' "
            "AND c.status IN ('dispatched', 'initiated', 'in_progress')"
        ),
        {"ids": list(call_ids)},
    )
    return [row.id for row in rows]


def release_claim(session: Session, call_id: str, claim_token: str, delay_s: float) -> bool:
    """dialing → pending, due after ``delay_s``, for a dial that never reached the provider."""
    result = session.execute(
        text(
            "UPDATE calls SET status = 'pending', claim_token = NULL, enqueued_at = NULL, "
            "due_at = now() + make_interval(secs => :delay), updated_at = now() "
            "WHERE id = :id AND status = 'dialing' AND claim_token = :token"
        ),
        {"id": call_id, "token": claim_token, "delay": delay_s},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def defer_unclaimed(session: Session, deferrals: Sequence[tuple[str, float]]) -> None:
    """Published calls that were not claimed (no live-call slot, or a pacing slot too far
    away) wait their delay (call id, seconds) more, as calls never published: the tick
    publishes them again once they are due."""
    session.execute(
        text(
            "UPDATE calls SET enqueued_at = NULL, updated_at = now(), "
            "due_at = GREATEST(due_at, now() + make_interval(secs => v.delay)) "
            "FROM unnest(CAST(:ids AS text[]), CAST(:delays AS double precision[])) "
            "AS v(id, delay) WHERE calls.id = v.id AND calls.status = 'pending'"
        ),
        {"ids": [call_id for call_id, _ in deferrals], "delays": [d for _, d in deferrals]},
    )


def abandon_pending_calls(session: Session, batch_id: str, outcome: str) -> list[str]:
    """Fail every pending call of a batch that cannot proceed; their ids."""
    result = session.execute(
        text(
            "UPDATE calls SET status = 'failed', outcome = :outcome, ended_at = now(), "
            f"updated_at = now() WHERE id IN ({_PENDING_UNLOCKED}) RETURNING id"
        ),
        {"batch_id": batch_id, "outcome": outcome},
    )
    return [row.id for row in result]


def orphaned_pending_calls(session: Session, within_s: float, limit: int) -> list[Row[Any]]:
    """Pending calls of batches cancelled or failed in the last ``within_s`` seconds (left by
    a claim that did not take them while the batch ended), made final as their batch's calls were:
    (id, batch_id, batch status) of each."""
    return list(
        session.execute(
            text(
                "UPDATE calls c SET status = CASE WHEN b.status = 'cancelled' THEN 'cancelled' "
                "ELSE 'failed' END, outcome = CASE WHEN b.status = 'cancelled' "
                "THEN 'batch_cancelled' ELSE 'batch_failed' END, ended_at = now(), "
                "updated_at = now() FROM batches b WHERE b.id = c.batch_id AND c.id IN ("
                "SELECT c2.id FROM batches b2 JOIN calls c2 ON c2.batch_id = b2.id "
                "WHERE b2.status IN ('cancelled', 'failed') "
                "AND b2.last_updated_at > now() - make_interval(secs => :within) "
                "AND c2.status = 'pending' LIMIT :limit FOR UPDATE OF c2 SKIP LOCKED) "
                "RETURNING c.id, c.batch_id, b.status AS batch_status"
            ),
            {"within": within_s, "limit": limit},
        ).all()
    )


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


def cancel_pending_calls(session: Session, batch_id: str, outcome: str) -> list[str]:
    """Every undialed call of a cancelled batch becomes cancelled; their ids."""
    result = session.execute(
        text(
            "UPDATE calls SET status = 'cancelled', outcome = :outcome, ended_at = now(), "
            f"updated_at = now() WHERE id IN ({_PENDING_UNLOCKED}) RETURNING id"
        ),
        {"batch_id": batch_id, "outcome": outcome},
    )
    return [row.id for row in result]


def live_call_ids(session: Session, batch_id: str) -> list[str]:
    """Calls of the batch the provider has and that have not ended."""
    rows = session.execute(
        text(
            "SELECT id FROM calls WHERE batch_id = :batch_id "
            "AND status IN ('dispatched', 'initiated', 'in_progress')"
        ),
        {"batch_id": batch_id},
    )
    return [row.id for row in rows]


def requeue_calls_with_outcomes(
    session: Session, batch_id: str, outcomes: Sequence[str]
) -> list[str]:
    """Failed calls with one of ``outcomes`` back to pending, due now and stamped published."""
    rows = session.execute(
        text(
            "UPDATE calls SET status = 'pending', outcome = NULL, provider_call_sid = NULL, "
            "provider_status = NULL, caller_number = NULL, answered_at = NULL, "
            "duration_s = NULL, error_code = NULL, error_message = NULL, "
            "claim_token = NULL, due_at = now(), enqueued_at = now(), ended_at = NULL, "
            "updated_at = now() "
            "WHERE batch_id = :batch_id AND status = 'failed' AND outcome = ANY(:outcomes) "
            "RETURNING id"
        ),
        {"batch_id": batch_id, "outcomes": list(outcomes)},
    )
    return [row.id for row in rows]


def hangup_row(session: Session, call_id: str) -> Row[Any] | None:
    """What ending a live call at the provider needs."""
    return session.execute(
        text(
            "SELECT c.status, c.provider_call_sid, p.credentials_ref "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()


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
    "AND c.status IN ('dialing', 'dispatched', 'initiated', 'in_progress') "
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
                "WHERE c.status IN ('dispatched', 'initiated', 'in_progress') "
                "AND c.answered_by LIKE 'machine%' AND c.voicemail_action IS NULL "
                "AND b.voicemail_behavior IN ('hang_up', 'leave_message') "
                "AND c.updated_at < now() - make_interval(secs => :after) "
                "ORDER BY c.updated_at LIMIT :limit"
            ),
            {"after": after_s, "limit": limit},
        )
    )


def machine_action_row(session: Session, call_id: str) -> Row[Any] | None:
    """What acting on a machine verdict needs: the call's state, verdict and action taken so
    far, its batch's voicemail behaviour and message template, its dynamic data, and the
    provider credentials."""
    return session.execute(
        text(
            "SELECT c.status, c.provider_call_sid, c.answered_by, c.voicemail_action, "
            "c.client_data, b.voicemail_behavior, b.voicemail_message_template, "
            "p.credentials_ref "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id WHERE c.id = :id"
        ),
        {"id": call_id},
    ).one_or_none()


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
