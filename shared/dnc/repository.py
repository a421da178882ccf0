"""The per-workspace do-not-call list."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from shared.models import DncNumber


def add_numbers(session: Session, workspace_id: str, numbers: Sequence[str]) -> int:
    """Add E.164 numbers; how many were new."""
    if not numbers:
        return 0
    result = session.execute(
        text(
            "INSERT INTO dnc_numbers (workspace_id, phone_number) "
            "SELECT :ws, unnest(CAST(:numbers AS text[])) ON CONFLICT DO NOTHING"
        ),
        {"ws": workspace_id, "numbers": list(numbers)},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def remove_number(session: Session, workspace_id: str, number: str) -> bool:
    """Remove one number; whether it was listed."""
    result = session.execute(
        delete(DncNumber).where(
            DncNumber.workspace_id == workspace_id, DncNumber.phone_number == number
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_numbers(
    session: Session, workspace_id: str, limit: int, after: str | None, exactly: str | None = None
) -> list[DncNumber]:
    """Listed numbers in order, after ``after`` (or just ``exactly`` that one)."""
    stmt = select(DncNumber).where(DncNumber.workspace_id == workspace_id)
    if exactly is not None:
        stmt = stmt.where(DncNumber.phone_number == exactly)
    if after is not None:
        stmt = stmt.where(DncNumber.phone_number > after)
    return list(session.execute(stmt.order_by(DncNumber.phone_number).limit(limit)).scalars())


def listed_among(session: Session, workspace_id: str, numbers: Sequence[str]) -> set[str]:
    """Which of ``numbers`` are on the workspace's list."""
    if not numbers:
        return set()
    rows = session.execute(
        text(
            "SELECT phone_number FROM dnc_numbers WHERE workspace_id = :ws "
            "AND phone_number = ANY(:numbers)"
        ),
        {"ws": workspace_id, "numbers": list(numbers)},
    )
    return {row.phone_number for row in rows}
