"""The do-not-call list, under /v1/voiceai/dnc and /v1/convai/dnc."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import SessionDep, WorkspaceDep
from shared.dnc import service
from shared.storable import Text

router = APIRouter(tags=["do-not-call"])


class DncEntry(BaseModel):
    phone_number: Text = Field(max_length=64)


class DncImport(BaseModel):
    phone_numbers: list[Text] = Field(min_length=1, max_length=100_000)


class DncListed(BaseModel):
    phone_number: str
    created_at_unix: int


class DncList(BaseModel):
    numbers: list[DncListed]
    next_cursor: str | None = None
    has_more: bool = False


@router.post("/dnc", status_code=201, response_model=DncListed)
def add_number(body: DncEntry, session: SessionDep, workspace_id: WorkspaceDep) -> DncListed:
    """Never call this number again from this workspace (checked at submit and at dial)."""
    number, created = service.add_number(session, workspace_id, body.phone_number)
    return DncListed(phone_number=number, created_at_unix=created)


@router.post("/dnc/import", response_model=dict[str, int])
def import_numbers(
    body: DncImport, session: SessionDep, workspace_id: WorkspaceDep
) -> dict[str, int]:
    """Add many numbers at once; one invalid number rejects the whole request (422 by index)."""
    added = service.add_numbers(session, workspace_id, body.phone_numbers)
    return {"received": len(body.phone_numbers), "added": added}


@router.delete("/dnc/{phone_number}", status_code=204)
def remove_number(phone_number: str, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Take a number off the list."""
    service.remove_number(session, workspace_id, phone_number)
    return Response(status_code=204)


@router.get("/dnc", response_model=DncList)
def list_numbers(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> DncList:
    """The listed numbers in order; pass ``next_cursor`` back as ``cursor``."""
    page, has_more = service.list_numbers(session, workspace_id, limit, cursor)
    return DncList(
        numbers=[DncListed(phone_number=n, created_at_unix=c) for n, c in page],
        next_cursor=page[-1][0] if has_more and page else None,
        has_more=has_more,
    )
