"""The periodic tick that keeps every batch moving."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from shared import messaging
from shared.db import Transaction
from shared.dispatch import repository as calls_repo
from shared.dispatch.fan_out import (
    batch_started,
    publish_after_commit,
    publish_dials_after_commit,
    within_free_slots,
)
from shared.lifecycle import store, transitions
from shared.limits import slots
from shared.limits.upkeep import audit_slots, restore_slots
from shared.services.status_inbox import redrive_status_inbox
from shared.settings import get_settings
from shared.webhooks import repository as webhooks_repo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickReport:
    """What one tick did."""

    batches_started: int
    calls_redriven: int
    calls_reconciling: int


# After the broker restarted empty, calls published longer ago than this are published again
# at once (their messages were lost with it); later ones were published to the new broker.
RESET_REDRIVE_AFTER_S = 2.0

# How long after a batch was cancelled or failed the tick still looks for calls left pending.
ORPHAN_WINDOW_S = 3600.0

# How often the live-call slots in Redis are checked against PostgreSQL for leaks.
SLOT_AUDIT_INTERVAL_S = 30.0


def run_tick(transaction: Transaction) -> TickReport:
    """One tick, with what comes before its transaction: whether the broker restarted empty
    since the last one, the live-call slots rebuilt from PostgreSQL if Redis lost them, and,
    every ``SLOT_AUDIT_INTERVAL_S``, their audit."""
    broker_reset = messaging.broker_restarted()
    restore_slots(transaction)
    if slots.audit_due(SLOT_AUDIT_INTERVAL_S):
        audit_slots(transaction)
    with transaction() as session:
        report = tick(session, broker_reset)
    if broker_reset:
        log.warning("the broker restarted empty: every message published before is re-driven")
    return report


def tick(session: Session, broker_reset: bool = False) -> TickReport:
    """Start due batches, re-drive calls whose messages were lost, reconcile stale calls, and
    publish webhook deliveries and status reports that are due (retries, and messages that
    were lost).

    With ``broker_reset`` (the broker restarted empty since the last tick), every message
    published before is presumed lost and its work re-driven at once.

    Every step claims rows with SKIP LOCKED or a guarded UPDATE, so two concurrent ticks (two
    beats) split the work instead of doubling it.
    """
    settings = get_settings()
    started = store.claim_due_batches(session, limit=50)
    for batch_id, status in started:
        batch_started(session, batch_id, status)
    # Only when the dial queue is empty can a published-but-pending call be presumed lost;
    # otherwise its message may simply be waiting its turn.
    if broker_reset:
        stale_enqueued_after_s: float | None = RESET_REDRIVE_AFTER_S
    elif messaging.queue_length(messaging.QUEUE_DIAL) == 0:
        stale_enqueued_after_s = settings.redrive_after_s
    else:
        stale_enqueued_after_s = None
    candidates = calls_repo.redrive_candidates(
        session, stale_enqueued_after_s=stale_enqueued_after_s, limit=settings.tick_batch_limit
    )
    redriven = within_free_slots(candidates)
    calls_repo.mark_enqueued(session, redriven)
    publish_dials_after_commit(session, redriven)
    stale = calls_repo.stale_live_calls(
        session,
        dialing_after_s=settings.dial_stale_after_s,
        ringing_grace_s=settings.callback_grace_s,
        default_ringing_s=settings.default_ringing_timeout_s,
        answered_after_s=settings.live_call_check_s,
        recheck_after_s=settings.reconcile_interval_s,
        limit=settings.tick_batch_limit,
    )
    publish_after_commit(session, messaging.TASK_RECONCILE, stale)
    transitions.finalise_orphans(session, ORPHAN_WINDOW_S, settings.tick_batch_limit)
    inbox_after_s = RESET_REDRIVE_AFTER_S if broker_reset else settings.status_inbox_redrive_after_s
    # A machine verdict's action is asked for again while its call is live and nothing was
    # done (the task is idempotent: it acts only while the call's voicemail_action is unset).
    machines = calls_repo.machines_left_unanswered(
        session, inbox_after_s, settings.tick_batch_limit
    )
    publish_after_commit(session, messaging.TASK_ANSWER_MACHINE, machines)
    lost_after_s = RESET_REDRIVE_AFTER_S if broker_reset else settings.redrive_after_s
    deliveries = webhooks_repo.due_deliveries(session, lost_after_s, settings.tick_batch_limit)
    publish_after_commit(session, messaging.TASK_DELIVER_WEBHOOK, deliveries)
    redrive_status_inbox(session, inbox_after_s, lost=broker_reset)
    return TickReport(len(started), len(redriven), len(stale))
