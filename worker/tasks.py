"""Tasks: each loads ids, calls a service, and decides retry or not. Names are stable."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import messaging
from shared.db import transaction
from shared.dispatch import dial as dialing
from shared.dispatch import fan_out as batch_start
from shared.dispatch import hang_up as hanging_up
from shared.dispatch import reconcile as reconciling
from shared.dispatch import tick as ticking
from shared.dispatch import voicemail as machines
from shared.services import status_inbox as status_inbox_service
from shared.webhooks import delivery as webhooks_service
from worker.app import app

log = logging.getLogger(__name__)

# A database or broker that is briefly away (a restart, a failover, a lost connection, a
# deadlock or serialization failure) fails the task, which is sent again after a backoff
# growing to 30 s, for as long as it takes: no task gives up on a transient error. Other
# errors (a bug, a constraint) are not retried; the tick re-drives what such a task was doing.
# A retry that cannot be published (the broker is down too) leaves the work to the tick.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    RedisConnectionError,
    RedisTimeoutError,
    BrokerUnavailable,
)
TRANSIENT_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": None,
}


@app.task(name=messaging.TASK_START_BATCH, **TRANSIENT_RETRY)
def start_batch(batch_id: str) -> bool:
    """Start a submitted batch whose time has come and fan its recipients out."""
    with transaction() as session:
        return batch_start.start_batch(session, batch_id)


# Never retried: the next tick, a few seconds later, does the same work.
@app.task(name=messaging.TASK_TICK)
def tick() -> dict[str, int]:
    """Beat's heartbeat: start due batches, re-drive lost messages, reconcile stale calls."""
    report = ticking.run_tick(transaction)
    if report.batches_started or report.calls_redriven or report.calls_reconciling:
        log.info("tick: %s", report)
    return report.__dict__


@app.task(name=messaging.TASK_DIAL, **TRANSIENT_RETRY)
def dial(call_id: str) -> str:
    """Claim and place one call."""
    return dialing.dial_call(call_id, transaction)


@app.task(name=messaging.TASK_DIAL_MANY, **TRANSIENT_RETRY)
def dial_many(call_ids: list[str]) -> dict[str, int]:
    """Claim and place several calls, one after another, and record the provider's answers
    together (a redelivered message finds the calls it already placed claimed, and skips them)."""
    return dict(Counter(dialing.dial_calls(call_ids, transaction)))


@app.task(name=messaging.TASK_APPLY_STATUSES, **TRANSIENT_RETRY)
def apply_statuses(
    reports: list[tuple[str, dict[str, Any]]], inbox_ids: list[int] | None = None
) -> int:
    """Apply the provider status callbacks the API gathered into one message, and delete their
    status inbox rows, in one transaction; a failure retries them all (each is applied at most
    once). Messages published before the inbox carry no ids; reports queued before the
    provider port are still read (``shared.telephony.reports``)."""
    updates, verdicts = status_inbox_service.read_reports(reports)
    if not updates and not verdicts and not inbox_ids:
        return 0
    with transaction() as session:
        return status_inbox_service.apply_reports(session, updates, inbox_ids or [], verdicts)


@app.task(name=messaging.TASK_APPLY_STATUS, **TRANSIENT_RETRY)
def apply_status(call_id: str, report: dict[str, Any]) -> int:
    """One status callback, as API processes before ``calls.apply_statuses`` published them."""
    return apply_statuses([(call_id, report)])


@app.task(name=messaging.TASK_RECONCILE, **TRANSIENT_RETRY)
def reconcile(call_id: str) -> str:
    """Ask the provider about a call whose answer or final callback is overdue."""
    return reconciling.reconcile_call(call_id, transaction)


@app.task(name=messaging.TASK_HANG_UP, **TRANSIENT_RETRY)
def hang_up(call_id: str) -> str:
    """End a live call of a cancelled batch through the provider."""
    return hanging_up.hang_up_call(call_id, transaction)


@app.task(name=messaging.TASK_ANSWER_MACHINE, **TRANSIENT_RETRY)
def answer_machine(call_id: str) -> str:
    """Do what the call's voicemail behaviour says to the machine that answered it."""
    return machines.answer_machine(call_id, transaction)


@app.task(name=messaging.TASK_DELIVER_WEBHOOK, **TRANSIENT_RETRY)
def deliver_webhook(delivery_id: str) -> str:
    """Send one webhook delivery that is due."""
    return webhooks_service.deliver(delivery_id, transaction)


@app.task(name=messaging.TASK_NOOP)
def noop(*args: Any) -> None:
    """Nothing: the benchmark's measure of the worker's bare message rate."""
