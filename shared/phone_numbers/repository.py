"""Caller phone numbers registered by a workspace."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.models import PhoneNumber, ProviderConnection


def insert_phone_number(session: Session, number: PhoneNumber) -> PhoneNumber | None:
    """Add a number; None when the workspace already has it."""
    try:
        with session.begin_nested():
            session.add(number)
            session.flush()
    except IntegrityError:
        return None
    session.refresh(number)
    return number


def get_phone_number(session: Session, workspace_id: str, number_id: str) -> PhoneNumber | None:
    """The number, if it is in this workspace."""
    return session.execute(
        select(PhoneNumber).where(
            PhoneNumber.id == number_id, PhoneNumber.workspace_id == workspace_id
        )
    ).scalar_one_or_none()


def default_phone_number(session: Session, workspace_id: str) -> PhoneNumber | None:
    """The workspace's first registered Twilio number, used when a batch names none."""
    return session.execute(
        select(PhoneNumber)
        .where(PhoneNumber.workspace_id == workspace_id, PhoneNumber.provider == "twilio")
        .order_by(PhoneNumber.id)
        .limit(1)
    ).scalar_one_or_none()


def list_phone_numbers(session: Session, workspace_id: str) -> list[PhoneNumber]:
    """Every number of the workspace, oldest first."""
    return list(
        session.execute(
            select(PhoneNumber)
            .where(PhoneNumber.workspace_id == workspace_id)
            .order_by(PhoneNumber.id)
        ).scalars()
    )


def connections_by_id(
    session: Session, workspace_id: str, ids: set[str]
) -> dict[str, ProviderConnection]:
    """The workspace's provider connections among ``ids`` (the trunks its numbers name)."""
    if not ids:
        return {}
    rows = session.execute(
        select(ProviderConnection).where(
            ProviderConnection.workspace_id == workspace_id, ProviderConnection.id.in_(ids)
        )
    ).scalars()
    return {row.id: row for row in rows}
