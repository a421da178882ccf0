"""The status inbox: every status report the API acknowledged, until a worker has applied it.

The API writes a window's reports in one statement committed on its own, before answering
their callbacks; the transaction that applies them deletes them; the tick publishes again
those that stay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.db import PreparedStatement

# (call id, report): a report as the API queues it.
InboxReport = tuple[str, dict[str, Any]]

# One statement for a whole window of reports: they come as one JSON array of [call id,
# report] pairs, so that its plan does not depend on how many there are.
_ADD_REPORTS = PreparedStatement(
    "switchboard_status_inbox_add",
    "INSERT INTO status_inbox (call_id, report) "
    "SELECT r.value ->> 0, r.value -> 1 "
    "FROM jsonb_array_elements(CAST(:reports AS jsonb)) AS r RETURNING id",
    (("reports", "jsonb"),),
)

# Run by every transaction that applies reports.
_DELETE_REPORTS = PreparedStatement(
    "switchboard_status_inbox_delete",
    "DELETE FROM status_inbox WHERE id = ANY(:ids)",
    (("ids", "bigint[]"),),
)

# Rows not applied and not published for a while, oldest first, stamped as published now.
# SKIP LOCKED: rows a transaction is applying (deleting) are not re-published, and two ticks
# split the rows instead of both publishing them.
_CLAIM_UNAPPLIED = (
    "WITH due AS (SELECT id FROM status_inbox "
    "WHERE published_at < now() - make_interval(secs => :older_than_s) "
    "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "UPDATE status_inbox s SET published_at = now(), redrives = s.redrives + 1 "
    "FROM due WHERE s.id = due.id "
    "RETURNING s.id, s.call_id, s.report, s.redrives - 1 AS earlier_redrives"
)


@dataclass(frozen=True)
class UnappliedReport:
    """An inbox row to publish again, and how often it was re-published before."""

    id: int
    call_id: str
    report: dict[str, Any]
    earlier_redrives: int


def add_reports(reports: Sequence[InboxReport], engine: Engine | None = None) -> list[int]:
    """Write reports to the inbox in one statement, committed on its own (one round trip, on a
    pooled connection of ``engine``, the process's by default); their ids. Raises SQLAlchemy's
    DBAPIError when the write failed."""
    if not reports:
        return []
    payload = json.dumps([[call_id, report] for call_id, report in reports])
    return [row.id for row in _ADD_REPORTS.run_alone({"reports": payload}, engine)]


def delete_reports(session: Session, ids: Sequence[int]) -> None:
    """Remove applied reports (in the transaction that applied them)."""
    if ids:
        session.execute(_DELETE_REPORTS.statement(session), {"ids": list(ids)})


def claim_unapplied(session: Session, older_than_s: float, limit: int) -> list[UnappliedReport]:
    """Up to ``limit`` reports last published more than ``older_than_s`` ago, oldest first,
    stamped as published now (locked until the session ends)."""
    rows = session.execute(text(_CLAIM_UNAPPLIED), {"older_than_s": older_than_s, "limit": limit})
    claimed = [
        UnappliedReport(row.id, row.call_id, row.report, row.earlier_redrives) for row in rows
    ]
    return sorted(claimed, key=lambda report: report.id)
