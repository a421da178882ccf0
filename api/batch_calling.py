"""The batch-calling API, served under /v1/voiceai/batch-calling and /v1/convai/batch-calling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import SessionDep, WorkspaceDep
from api.responses import CONFLICT
from shared.batches import control, views
from shared.batches import csv as batch_csv
from shared.batches import submit as batch_submit
from shared.db import transaction
from shared.schemas import BatchDetailResponse, BatchListResponse, BatchResponse, SubmitBatchRequest

router = APIRouter(tags=["batch-calling"])


@router.post(
    "/submit",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Submit A Batch Call Request",
)
def submit_batch(
    body: SubmitBatchRequest,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> BatchResponse:
    """Store the batch and its recipients; calls start at ``scheduled_time_unix`` (or now)."""
    batch_id = batch_submit.submit_batch(session, workspace_id, body, idempotency_key)
    return views.get_batch(session, workspace_id, batch_id)


@router.post(
    "/submit-csv",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Submit A Batch Call From A CSV File",
)
def submit_batch_csv(
    file: Annotated[
        UploadFile, File(description="UTF-8 CSV: phone_number, optional id, variables")
    ],
    call_name: Annotated[str, Form()],
    agent_id: Annotated[str, Form()],
    session: SessionDep,
    workspace_id: WorkspaceDep,
    agent_phone_number_id: Annotated[str | None, Form()] = None,
    scheduled_time_unix: Annotated[int | None, Form()] = None,
    timezone: Annotated[str | None, Form()] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> BatchResponse:
    """One recipient per row; every other column than ``phone_number`` and ``id`` is a dynamic
    variable. Errors name the row (the header is row 1) and the column."""
    # Read at most one byte past the limit, so an oversized upload is refused, not buffered.
    data = file.file.read(batch_csv.MAX_CSV_BYTES + 1)
    form = batch_csv.SubmitCsvForm(
        call_name=call_name,
        agent_id=agent_id,
        agent_phone_number_id=agent_phone_number_id,
        scheduled_time_unix=scheduled_time_unix,
        timezone=timezone,
    )
    batch_id = batch_csv.submit_csv_batch(session, workspace_id, data, form, idempotency_key)
    return views.get_batch(session, workspace_id, batch_id)


@router.get("/workspace", response_model=BatchListResponse, summary="List batch calls")
def list_batches(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    last_doc: str | None = None,
    agent_id: str | None = None,
) -> BatchListResponse:
    """The workspace's batches, newest first; pass ``next_doc`` back as ``last_doc``."""
    batches, has_more = views.list_batches(session, workspace_id, limit, last_doc, agent_id)
    return BatchListResponse(
        batch_calls=batches,
        next_doc=batches[-1].id if has_more and batches else None,
        has_more=has_more,
    )


@router.get("/{batch_id}", response_model=BatchDetailResponse, summary="Get a batch call")
def get_batch(
    batch_id: str, session: SessionDep, workspace_id: WorkspaceDep
) -> BatchDetailResponse:
    """The batch with every recipient's status."""
    return views.get_batch_detail(session, workspace_id, batch_id)


@router.get(
    "/{batch_id}/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Export a batch call's results as CSV",
)
def export_batch(batch_id: str, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """One row per recipient in submission order: status, outcome, attempts, call SID, ..."""
    return Response(
        content=batch_csv.export_batch_csv(session, workspace_id, batch_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{batch_id}.csv"'},
    )


@router.get(
    "/{batch_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Export a batch call's recipients and results as CSV, streamed",
)
def stream_export_batch(
    batch_id: str,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[
        int | None, Query(ge=1, le=batch_csv.MAX_CSV_ROWS, description="Only the first N rows")
    ] = None,
) -> StreamingResponse:
    """The columns of ``export.csv``; ``limit`` previews the first recipients."""
    batch_csv.require_batch(session, workspace_id, batch_id)
    return StreamingResponse(
        batch_csv.stream_batch_csv(batch_id, transaction, limit),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{batch_id}.csv"'},
    )


@router.delete(
    "/{batch_id}",
    status_code=204,
    response_class=Response,
    responses=CONFLICT,
    summary="Delete a batch call",
)
def delete_batch(batch_id: str, workspace_id: WorkspaceDep) -> Response:
    """Delete the batch and its recipient records for good; a running batch is cancelled
    first (no call is placed once this returns, live calls are hung up)."""
    control.delete_batch(workspace_id, batch_id, transaction)
    return Response(status_code=204)


def _control(
    batch_id: str, workspace_id: str, action: Callable[[Session, str, str], object], settle: bool
) -> BatchResponse:
    # The action commits first; the answer waits out the dials' fence from then on.
    with transaction() as session:
        action(session, workspace_id, batch_id)
    if settle:
        control.settle_claims(batch_id, transaction, committed_at=time.monotonic())
    with transaction() as session:
        return views.get_batch(session, workspace_id, batch_id)


@router.post(
    "/{batch_id}/cancel",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Cancel a batch call",
)
def cancel_batch(batch_id: str, workspace_id: WorkspaceDep) -> BatchResponse:
    """Cancel: no call is placed once this returns; calls in progress are hung up."""
    return _control(batch_id, workspace_id, control.cancel_batch, settle=True)


@router.post(
    "/{batch_id}/pause",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Pause a batch call",
)
def pause_batch(batch_id: str, workspace_id: WorkspaceDep) -> BatchResponse:
    """Pause: no new call is placed once this returns; calls in progress go on."""
    return _control(batch_id, workspace_id, control.pause_batch, settle=True)


@router.post(
    "/{batch_id}/resume",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Resume a batch call",
)
def resume_batch(batch_id: str, workspace_id: WorkspaceDep) -> BatchResponse:
    """Resume a paused batch where it stopped."""
    return _control(batch_id, workspace_id, control.resume_batch, settle=False)


@router.post(
    "/{batch_id}/retry",
    response_model=BatchResponse,
    responses=CONFLICT,
    summary="Retry a batch call",
)
def retry_batch(batch_id: str, workspace_id: WorkspaceDep) -> BatchResponse:
    """Dial again the recipients whose final outcome was failed, busy or no-answer."""
    return _control(batch_id, workspace_id, control.retry_batch, settle=False)
