"""What the API shows of batches: one, one with its recipients, a page of them, the dashboard."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.orm import Session

from shared.batches import calls_repository as calls_repo
from shared.batches import repository as batches_repo
from shared.batches.repository import BatchRow, DashboardRow
from shared.dispatch.dial import ringing_timeout_s
from shared.errors import NotFound
from shared.lifecycle.states import public_status
from shared.provider_outage import PAUSED_MANUALLY
from shared.schemas import (
    BatchDetailResponse,
    BatchResponse,
    DashboardBatch,
    DashboardResponse,
    PausedReason,
    RecipientResponse,
    TelephonyCallConfigResponse,
)
from shared.timestamps import unix
from shared.voicemail import VoicemailBehavior


def _batch_response(row: BatchRow, cls: type[BatchResponse] = BatchResponse, **extra: Any) -> Any:
    return cls(
        id=row.id,
        name=row.name,
        agent_id=row.agent_id,
        created_at_unix=unix(row.created_at),
        scheduled_time_unix=unix(row.scheduled_at),
        last_updated_at_unix=unix(row.last_updated_at),
        status=row.status,
        agent_name=row.agent_name,
        phone_number_id=row.phone_number_id,
        phone_number_ids=row.phone_number_ids,
        phone_provider=row.phone_provider,
        whatsapp_params=row.whatsapp_params,  # type: ignore[arg-type]  # JSON the model validates
        total_calls_dispatched=row.total_calls_dispatched,
        total_calls_scheduled=row.total_calls_scheduled,
        total_calls_finished=row.total_calls_finished,
        retry_count=row.retry_count,
        timezone=row.timezone,
        telephony_call_config=TelephonyCallConfigResponse.model_validate(
            {
                **(row.telephony_call_config or {}),
                "ringing_timeout_secs": ringing_timeout_s(row.telephony_call_config),
            }
        ),
        target_concurrency_limit=row.target_concurrency_limit,
        retry_policy=row.retry_policy,  # type: ignore[arg-type]  # JSON the model validates
        calling_window=row.calling_window,  # type: ignore[arg-type]  # JSON the model validates
        voicemail_behavior=VoicemailBehavior(row.voicemail_behavior),
        voicemail_message=row.voicemail_message_template,
        paused=row.paused_at is not None,
        paused_reason=_paused_reason(row),
        **extra,
    )


def _paused_reason(row: BatchRow | DashboardRow) -> PausedReason | None:
    # A batch paused before reasons were recorded was paused through the endpoint.
    if row.paused_at is None:
        return None
    return cast(PausedReason, row.paused_reason or PAUSED_MANUALLY)


def get_batch(session: Session, workspace_id: str, batch_id: str) -> BatchResponse:
    """The batch without its recipients, or 404."""
    row = batches_repo.get_batch_row(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    return _batch_response(row)


def get_batch_detail(session: Session, workspace_id: str, batch_id: str) -> BatchDetailResponse:
    """The batch and every recipient with its status, or 404."""
    row = batches_repo.get_batch_row(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    recipients = [
        RecipientResponse(
            id=r.recipient_id,
            phone_number=r.phone_number,
            whatsapp_user_id=r.whatsapp_user_id,
            status=public_status(r.status),  # type: ignore[arg-type]
            outcome=r.outcome,
            attempts=r.attempts,
            created_at_unix=unix(r.created_at),
            updated_at_unix=unix(r.updated_at),
            conversation_id=r.id if r.provider_call_sid else None,
            provider_call_sid=r.provider_call_sid,
            caller_number=r.caller_number,
            conversation_initiation_client_data=r.client_data,
            attempt_history=r.attempt_history,
        )
        for r in calls_repo.recipient_rows(session, batch_id)
    ]
    return _batch_response(row, BatchDetailResponse, recipients=recipients)


def list_batches(
    session: Session, workspace_id: str, limit: int, last_doc: str | None, agent_id: str | None
) -> tuple[list[BatchResponse], bool]:
    """One page of batches, newest first, and whether more follow."""
    rows = batches_repo.list_batch_rows(session, workspace_id, limit + 1, last_doc, agent_id)
    return [_batch_response(r) for r in rows[:limit]], len(rows) > limit


def dashboard_batches(session: Session, workspace_id: str, limit: int) -> DashboardResponse:
    """The newest batches with their counters and their recipients counted by public status."""
    rows = batches_repo.dashboard_batch_rows(session, workspace_id, limit)
    counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
    for batch_id, status, count in calls_repo.status_counts(session, list(counts)):
        by_status = counts[batch_id]
        # `dialing` is counted as `pending`, as every recipient response shows it.
        shown = public_status(status)
        by_status[shown] = by_status.get(shown, 0) + count
    return DashboardResponse(
        batches=[
            DashboardBatch(
                id=row.id,
                name=row.name,
                status=row.status,
                paused=row.paused_at is not None,
                paused_reason=_paused_reason(row),
                created_at_unix=unix(row.created_at),
                total_calls_scheduled=row.total_calls_scheduled,
                total_calls_dispatched=row.total_calls_dispatched,
                total_calls_finished=row.total_calls_finished,
                retry_count=row.retry_count,
                total_recipients=row.total_recipients,
                final_recipients=row.calls_final,
                recipients_by_status=counts[row.id],  # type: ignore[arg-type]
            )
            for row in rows
        ]
    )
