"""What the live-call slots' upkeep reads of calls: which hold a slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from shared.lifecycle.states import SQL_LIVE

_SLOT_HOLDING = SQL_LIVE


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
