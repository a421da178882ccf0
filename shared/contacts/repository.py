"""Contacts: a workspace's contact book, one entry per E.164 number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.models import Contact

# Only fields given in the request change, and a row whose given fields already hold those
# values is not rewritten (so updated_at means a real change).
_UPDATE_GIVEN_FIELDS = (
    "DO UPDATE SET "
    "first_name = COALESCE(EXCLUDED.first_name, contacts.first_name), "
    "last_name = COALESCE(EXCLUDED.last_name, contacts.last_name), "
    "email = COALESCE(EXCLUDED.email, contacts.email), "
    "updated_at = now() "
    "WHERE (EXCLUDED.first_name IS NOT NULL "
    "AND EXCLUDED.first_name IS DISTINCT FROM contacts.first_name) "
    "OR (EXCLUDED.last_name IS NOT NULL "
    "AND EXCLUDED.last_name IS DISTINCT FROM contacts.last_name) "
    "OR (EXCLUDED.email IS NOT NULL AND EXCLUDED.email IS DISTINCT FROM contacts.email)"
)


def upsert_contacts(
    session: Session,
    workspace_id: str,
    contacts: Sequence[dict[str, Any]],
    update_existing: bool,
) -> dict[str, str]:
    """Create the numbers' missing contacts (and, with ``update_existing``, update the given
    fields of existing ones) in one statement; every number's contact id.

    ``contacts`` holds one entry per number (keys id, phone_number, first_name, last_name,
    email). Rows are written in number order, so concurrent requests lock them in one order.
    """
    if not contacts:
        return {}
    ordered = sorted(contacts, key=lambda c: c["phone_number"])
    phones = [c["phone_number"] for c in ordered]
    conflict = _UPDATE_GIVEN_FIELDS if update_existing else "DO NOTHING"
    session.execute(
        text(
            "INSERT INTO contacts (id, workspace_id, phone_number, first_name, last_name, email) "
            "SELECT c.id, :ws, c.phone, c.first_name, c.last_name, c.email FROM unnest("
            "CAST(:ids AS text[]), CAST(:phones AS text[]), CAST(:first AS text[]), "
            "CAST(:last AS text[]), CAST(:emails AS text[])) "
            "AS c(id, phone, first_name, last_name, email) "
            f"ON CONFLICT (workspace_id, phone_number) {conflict}"
        ),
        {
            "ws": workspace_id,
            "ids": [c["id"] for c in ordered],
            "phones": phones,
            "first": [c["first_name"] for c in ordered],
            "last": [c["last_name"] for c in ordered],
            "emails": [c["email"] for c in ordered],
        },
    )
    rows = session.execute(
        text(
            "SELECT id, phone_number FROM contacts "
            "WHERE workspace_id = :ws AND phone_number = ANY(CAST(:phones AS text[]))"
        ),
        {"ws": workspace_id, "phones": phones},
    )
    return {row.phone_number: row.id for row in rows}


def get_contact(session: Session, workspace_id: str, contact_id: str) -> Contact | None:
    """The contact, if it is in this workspace."""
    return session.execute(
        select(Contact).where(Contact.id == contact_id, Contact.workspace_id == workspace_id)
    ).scalar_one_or_none()


def list_contacts(
    session: Session, workspace_id: str, limit: int, before_id: str | None
) -> list[Contact]:
    """Newest first (ids are time-ordered); ``before_id`` continues after that contact."""
    stmt = select(Contact).where(Contact.workspace_id == workspace_id)
    if before_id is not None:
        stmt = stmt.where(Contact.id < before_id)
    return list(session.execute(stmt.order_by(Contact.id.desc()).limit(limit)).scalars())
