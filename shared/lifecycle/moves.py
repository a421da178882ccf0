"""The UPDATE statements that move calls as ``shared.lifecycle.plans`` decided: one per shape
(the columns a move sets), for one row or for many joined from arrays, each row guarded by the
status it was decided from. Only ``shared.lifecycle.store`` runs them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.db import SQL_PARAMETER
from shared.lifecycle.plans import Transition
from shared.models import Call

CALLS = cast(Table, Call.__table__)


class _Now:
    """``now()`` in the database: what a value of a ``Move`` may be."""

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
        "from_status": str(transition.from_status),
        "to_status": str(transition.to_status),
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
