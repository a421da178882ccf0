"""Contact bodies: a contact and the calls made to it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.schemas.common import RecipientStatus


class ContactResponse(BaseModel):
    id: str
    phone_number: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    created_at_unix: int
    updated_at_unix: int


class ContactCallResponse(BaseModel):
    call_id: str
    batch_id: str
    status: RecipientStatus
    outcome: str | None = None
    attempts: int = 0
    provider_call_sid: str | None = None
    created_at_unix: int
    updated_at_unix: int
    request_metadata: dict[str, Any] | None = None


class ContactDetailResponse(ContactResponse):
    calls: list[ContactCallResponse] = Field(default_factory=list)


class ContactListResponse(BaseModel):
    contacts: list[ContactResponse]
    next_doc: str | None = None
    has_more: bool = False
