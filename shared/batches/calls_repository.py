"""What batches read of their calls: recipients in submission order, counts by status, call ids,
the calls still live, and the calls placed to a contact."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session

from shared.lifecycle.states import SQL_AT_PROVIDER
from shared.models import Call


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


def live_call_ids(session: Session, batch_id: str) -> list[str]:
    """Calls of the batch the provider has and that have not ended."""
    rows = session.execute(
        text(f"SELECT id FROM calls WHERE batch_id = :batch_id AND status IN {SQL_AT_PROVIDER}"),
        {"batch_id": batch_id},
    )
    return [row.id for row in rows]


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
