"""Controlling a batch: cancel, pause, resume, retry its failed recipients, delete it; and, after a
cancel or pause, settling the dials that had claimed its calls."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

from shared import messaging
from shared.batches import calls_repository as calls_repo
from shared.batches import repository as batches_repo
from shared.batches.repository import LockedBatch
from shared.db import Transaction
from shared.dispatch.fan_out import fan_out, publish_after_commit, publish_dials_after_commit
from shared.dispatch.fence import DIAL_FENCE_S
from shared.dispatch.hang_up import hang_up_call
from shared.errors import Conflict, NotFound
from shared.lifecycle import plans, store, transitions
from shared.lifecycle.plans import Control, ControlPlan
from shared.lifecycle.states import BATCH_OPEN, BatchStatus
from shared.provider_outage import PAUSED_MANUALLY
from shared.webhooks import events as webhooks


def _locked_batch(session: Session, workspace_id: str, batch_id: str) -> LockedBatch:
    row = batches_repo.lock_batch(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    return row


def _to_apply(plan: ControlPlan) -> bool:
    """Whether a control request's plan is to be applied (409 when it is refused)."""
    if plan.control is Control.REFUSE:
        raise Conflict(["path", "batch_id"], plan.reason)
    return plan.control is Control.APPLY


def cancel_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """pending/in_progress → cancelled; undialed recipients become cancelled. Idempotent."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if _to_apply(plans.plan_cancel(BatchStatus(batch.status))):
        transitions.cancel_batch(session, batch_id)


def pause_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """A paused batch places no new calls and keeps its place. Idempotent."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if _to_apply(plans.plan_pause(BatchStatus(batch.status), batch.paused_at is not None)):
        store.set_paused(session, batch_id, PAUSED_MANUALLY)
        webhooks.batch_paused(session, batch_id)


def resume_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """Resume a paused batch, whatever paused it (its reason is cleared, and a run of dials
    its provider did not process starts afresh): its due calls are published again after
    commit."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if not _to_apply(plans.plan_resume(batch.paused_at is not None)):
        return
    store.set_paused(session, batch_id, None)
    if batch.status == BatchStatus.IN_PROGRESS:
        fan_out(session, batch_id)


def retry_batch(session: Session, workspace_id: str, batch_id: str) -> int:
    """Dial again every recipient whose final outcome was failed, busy or no-answer.

    Those recipients stop being finished (the counter goes down by as many) and the batch is
    in progress again; completed, voicemail and cancelled recipients are left as they are.
    """
    batch = _locked_batch(session, workspace_id, batch_id)
    _to_apply(plans.plan_manual_retry(BatchStatus(batch.status)))
    call_ids = transitions.retry_failed_calls(session, batch_id)
    publish_dials_after_commit(session, call_ids)
    return len(call_ids)


def delete_batch(workspace_id: str, batch_id: str, transaction: Transaction) -> None:
    """Delete the batch and its recipients for good, or 404. A pending or running batch is
    cancelled first and its claims settled, so no call is placed once this returns; calls
    still live are hung up before their rows go."""
    with transaction() as session:
        batch = _locked_batch(session, workspace_id, batch_id)
        running = batch.status in BATCH_OPEN
        if running:
            cancel_batch(session, workspace_id, batch_id)
    if running:
        settle_claims(batch_id, transaction, committed_at=time.monotonic())
    with transaction() as session:
        live = calls_repo.live_call_ids(session, batch_id)
    # Ended here rather than by the queued hang-ups: those find no row once it is deleted.
    for call_id in live:
        hang_up_call(call_id, transaction)
    with transaction() as session:
        batch = _locked_batch(session, workspace_id, batch_id)
        if batch.status in BATCH_OPEN:
            raise Conflict(["path", "batch_id"], "the batch was started again meanwhile")
        batches_repo.delete_batch(session, workspace_id, batch_id)


def settle_claims(batch_id: str, transaction: Transaction, committed_at: float) -> None:
    """After a cancel or pause committed (at ``committed_at``, ``time.monotonic()``): wait out
    the dials' fence, then end the cancelled batch's live calls through the provider.

    A dial sends its request only within ``DIAL_SEND_WINDOW_S`` of a read that saw its batch
    running (its claim, or a later read), and ``DIAL_FENCE_S`` is longer: once it has passed
    since the commit, no request of this batch can go out any more, whatever the state of the
    workers holding its claims (a dead worker's claim is reconciled later, and ends
    cancelled). Calls placed right before the commit whose answers are recorded after the
    lookup below are hung up by the transaction that records them.
    """
    time.sleep(max(committed_at + DIAL_FENCE_S - time.monotonic(), 0.0))
    with transaction() as session:
        if batches_repo.batch_status(session, batch_id) == BatchStatus.CANCELLED:
            publish_after_commit(
                session, messaging.TASK_HANG_UP, calls_repo.live_call_ids(session, batch_id)
            )
