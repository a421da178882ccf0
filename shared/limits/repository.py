"""What the live-call slots' upkeep reads of calls: which hold a slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from shared.lifecycle.states import SQL_LIVE

_SLOT_HOLDING = SQL_LIVE


def slot_holders(session: Session) -> list[Row[Any]]:
    """Every call that holds a live-call slot (claimed or live): id, batch_id, workspace_id, and
    its batch's caller number's provider and credentials_ref (its account, as dispatch reads
    it)."""
    return list(
        session.execute(
            text(
                "SELECT c.id, c.batch_id, c.workspace_id, p.provider, p.credentials_ref "
                "FROM calls c JOIN batches b ON b.id = c.batch_id "
                "LEFT JOIN phone_numbers p ON p.id = b.phone_number_id "
                f"WHERE c.status IN {_SLOT_HOLDING}"
            )
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
