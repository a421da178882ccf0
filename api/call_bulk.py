"""The call-bulk API: ``POST /ai/phone-calls/action/call-bulk``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from api.deps import SessionDep, WorkspaceDep
from api.responses import CONFLICT
from shared.batches import call_bulk as service
from shared.schemas import CallBulkRequest, CallBulkResponse

router = APIRouter(tags=["call-bulk"])


@router.post(
    "/phone-calls/action/call-bulk",
    status_code=201,
    response_model=CallBulkResponse,
    responses=CONFLICT,
    summary="Call many contacts",
)
def call_bulk(
    body: CallBulkRequest,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> CallBulkResponse:
    """Store the contacts and one call each as a batch (managed under batch-calling); the
    calls start at once."""
    batch_id = service.submit_call_bulk(session, workspace_id, body, idempotency_key)
    return service.call_bulk_result(session, workspace_id, batch_id)
