"""Contacts: the workspace's contact book that call-bulk fills, and each contact's calls."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.batches import calls_repository as calls_repo
from shared.contacts import repository as contacts_repo
from shared.errors import NotFound
from shared.lifecycle.states import public_status
from shared.models import Contact
from shared.schemas import ContactCallResponse, ContactDetailResponse, ContactResponse
from shared.timestamps import unix


def _contact_response(
    contact: Contact, cls: type[ContactResponse] = ContactResponse, **extra: Any
) -> Any:
    return cls(
        id=contact.id,
        phone_number=contact.phone_number,
        first_name=contact.first_name,
        last_name=contact.last_name,
        email=contact.email,
        created_at_unix=unix(contact.created_at),
        updated_at_unix=unix(contact.updated_at),
        **extra,
    )


def list_contacts(
    session: Session, workspace_id: str, limit: int, last_doc: str | None
) -> tuple[list[ContactResponse], bool]:
    """One page of contacts, newest first, and whether more follow."""
    rows = contacts_repo.list_contacts(session, workspace_id, limit + 1, last_doc)
    return [_contact_response(c) for c in rows[:limit]], len(rows) > limit


def get_contact(session: Session, workspace_id: str, contact_id: str) -> ContactDetailResponse:
    """The contact and its call history (newest first), or 404."""
    contact = contacts_repo.get_contact(session, workspace_id, contact_id)
    if contact is None:
        raise NotFound(["path", "contact_id"], f"contact '{contact_id}' not found")
    calls = [
        ContactCallResponse(
            call_id=row.id,
            batch_id=row.batch_id,
            status=public_status(row.status),  # type: ignore[arg-type]
            outcome=row.outcome,
            attempts=row.attempts,
            provider_call_sid=row.provider_call_sid,
            created_at_unix=unix(row.created_at),
            updated_at_unix=unix(row.updated_at),
            request_metadata=row.request_metadata,
        )
        for row in calls_repo.contact_call_rows(session, workspace_id, contact_id)
    ]
    return _contact_response(contact, ContactDetailResponse, calls=calls)
