"""The contact book: ``/ai/contacts``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep, WorkspaceDep
from shared.contacts import service
from shared.schemas import ContactDetailResponse, ContactListResponse

router = APIRouter(tags=["contacts"])


@router.get("/contacts", response_model=ContactListResponse, summary="List contacts")
def list_contacts(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    last_doc: str | None = None,
) -> ContactListResponse:
    """The workspace's contacts, newest first; pass ``next_doc`` back as ``last_doc``."""
    contacts, has_more = service.list_contacts(session, workspace_id, limit, last_doc)
    return ContactListResponse(
        contacts=contacts,
        next_doc=contacts[-1].id if has_more and contacts else None,
        has_more=has_more,
    )


@router.get("/contacts/{contact_id}", response_model=ContactDetailResponse, summary="Get a contact")
def get_contact(
    contact_id: str, session: SessionDep, workspace_id: WorkspaceDep
) -> ContactDetailResponse:
    """The contact and every call placed to it, newest first."""
    return service.get_contact(session, workspace_id, contact_id)
