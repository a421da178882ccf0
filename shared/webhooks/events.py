"""Webhook events, written with the change that causes them: one delivery row per subscribed
endpoint in the same transaction, published after its commit as the workspace's slots allow."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from shared import messaging
from shared.db import after_commit
from shared.webhooks import admission
from shared.webhooks import repository as webhooks_repo


def publish_woken(delivery_ids: Sequence[str]) -> None:
    """Publish the deliveries a freed slot was handed on to."""
    if delivery_ids:
        messaging.publish_many(messaging.TASK_DELIVER_WEBHOOK, ([i] for i in delivery_ids))


def _publish(session: Session, deliveries: Sequence[tuple[str, str]]) -> None:
    """After the commit, each workspace's new deliveries join its waiting set: as many as it
    has free slots are published at once, the others as its deliveries in flight end. A
    workspace with thousands of deliveries (many endpoints, slow receivers) thus never fills
    the queue ahead of another's."""
    if deliveries:
        by_workspace: dict[str, list[str]] = {}
        for delivery_id, workspace_id in deliveries:
            by_workspace.setdefault(workspace_id, []).append(delivery_id)

        def publish() -> None:
            for workspace_id, ids in by_workspace.items():
                publish_woken(admission.enqueue(workspace_id, ids))

        after_commit(session, publish)


def calls_ended(session: Session, call_ids: Sequence[str]) -> None:
    """In the transaction that made these calls final: their ``call.ended`` deliveries."""
    _publish(session, webhooks_repo.add_call_ended(session, call_ids))


def batch_completed(session: Session, batch_id: str) -> None:
    """In the transaction that completed the batch: its ``batch.completed`` deliveries."""
    _publish(session, webhooks_repo.add_batch_completed(session, batch_id))


def batch_paused(session: Session, batch_id: str) -> None:
    """In the transaction that paused the batch: its ``batch.paused`` deliveries."""
    _publish(session, webhooks_repo.add_batch_paused(session, batch_id))
