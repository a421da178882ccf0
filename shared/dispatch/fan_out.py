"""Fanning calls out as dial messages, published after the commit that made them due; and starting
a batch, which fans its calls out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from shared import messaging
from shared.batches import repository as batches_repo
from shared.db import after_commit
from shared.dispatch import repository as calls_repo
from shared.lifecycle import store
from shared.lifecycle.states import BatchStatus
from shared.limits import slots
from shared.settings import get_settings
from shared.telephony import registry
from shared.webhooks import events as webhooks

log = logging.getLogger(__name__)


def fan_out(session: Session, batch_id: str) -> None:
    call_ids = calls_repo.mark_batch_calls_enqueued(session, batch_id)
    chunk_size = batches_repo.fan_out_chunk_size(session, batch_id)
    publish_dials_after_commit(session, call_ids, chunk_size)


def within_free_slots(candidates: Sequence[Any]) -> list[str]:
    """The candidates that have a free live-call slot now (workspace cap, the batch's
    target_concurrency_limit and the provider account's cap), oldest due first; the others
    wait, unpublished, for a later tick. A call dialed without a free slot would only be
    handed back again: this keeps a workspace or an account at its cap from spinning through
    claims of calls that cannot be placed."""
    needs = [
        (
            row.id,
            slots.slot_limits(
                row.batch_id,
                row.workspace_id,
                registry.account_key(row.provider, row.credentials_ref),
                row.target_concurrency_limit,
            ),
        )
        for row in candidates
    ]
    limits = {limit.key: limit.limit for _, call_limits in needs for limit in call_limits}
    try:
        held = slots.taken(list(limits))
    except RedisError as exc:  # the dial itself will find out
        log.warning("concurrency slots unavailable to the tick: %s", exc)
        return [call_id for call_id, _ in needs]
    free = {key: limit - held[key] for key, limit in limits.items()}
    chosen = []
    for call_id, call_limits in needs:
        if all(free[limit.key] > 0 for limit in call_limits):
            for limit in call_limits:
                free[limit.key] -= 1
            chosen.append(call_id)
    return chosen


def dial_groups(call_ids: Sequence[str]) -> list[list[str]]:
    """The calls in groups, one dial message each: up to ``max_calls_per_dial_message``, but
    at least ``dial_messages_min`` messages when there are that many calls."""
    settings = get_settings()
    spread = len(call_ids) // settings.dial_messages_min
    size = max(1, min(settings.max_calls_per_dial_message, spread))
    return [list(call_ids[i : i + size]) for i in range(0, len(call_ids), size)]


def publish_dials_after_commit(
    session: Session, call_ids: Sequence[str], chunk_size: int | None = None
) -> None:
    """Dial these calls, after commit: ``calls.dial`` messages, or ``calls.dial_many``."""
    groups = dial_groups(call_ids)
    if groups and len(groups[0]) > 1:
        publish_after_commit(session, messaging.TASK_DIAL_MANY, groups, chunk_size)
    else:
        publish_after_commit(session, messaging.TASK_DIAL, call_ids, chunk_size)


def publish_after_commit(
    session: Session,
    task_name: str,
    ids: Sequence[Any],
    chunk_size: int | None = None,
) -> None:
    """One ``task_name`` message per item of ``ids``, after commit; its one argument is the
    item."""
    if ids:
        chunk = chunk_size or get_settings().fan_out_chunk_size
        after_commit(
            session,
            lambda: log.info(
                "published %d %s",
                messaging.publish_many(task_name, ([i] for i in ids), chunk),
                task_name,
            ),
        )


def start_batch(session: Session, batch_id: str) -> bool:
    """pending → in_progress if due, and fan its recipients out as dial messages after commit."""
    status = store.start_batch_if_due(session, batch_id)
    if status is None:
        return False
    batch_started(session, batch_id, status)
    return True


def batch_started(session: Session, batch_id: str, status: BatchStatus) -> None:
    """A batch just started: fan its calls out, or, when none was left to call (all excluded
    at submit), report it completed."""
    if status == BatchStatus.COMPLETED:
        webhooks.batch_completed(session, batch_id)
    else:
        fan_out(session, batch_id)
