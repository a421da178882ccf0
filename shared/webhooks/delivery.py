"""Webhook delivery: one signed attempt at a time, admitted by the endpoint's breaker and the
in-flight limits, due again after an exponential backoff.

Every delivery is a POST of the event's JSON body with these headers:

* ``Switchboard-Event-Id``: the event's id, the same on every retry and for every endpoint;
* ``Switchboard-Event-Type``: ``call.ended``, ``batch.completed`` or ``batch.paused``;
* ``Switchboard-Timestamp``: Unix seconds when this attempt was signed;
* ``Switchboard-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` keyed with
  the endpoint's secret.

A receiver recomputes the signature over the raw body and rejects a mismatch or a timestamp
more than five minutes away from its clock (``verify_signature`` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Any

import requests
from sqlalchemy.orm import Session

from shared.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES_DEFERRED
from shared.settings import get_settings
from shared.webhooks import admission as webhook_admission
from shared.webhooks import repository as webhooks_repo
from shared.webhooks.admission import Target, Verdict
from shared.webhooks.destinations import forbidden_destination, http_session
from shared.webhooks.events import publish_woken

log = logging.getLogger(__name__)

Transaction = Callable[[], AbstractContextManager[Session]]


SIGNATURE_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Switchboard-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str, body: bytes, timestamp: str, signature: str, now: float | None = None
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - sent) > SIGNATURE_TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def retry_delay_s(attempts: int) -> float:
    """How long after the ``attempts``-th failed attempt the next one is due."""
    settings = get_settings()
    return float(
        min(
            settings.webhook_retry_base_s * 2 ** max(attempts - 1, 0),
            settings.webhook_retry_max_delay_s,
        )
    )


def _send(
    row: Any, timeout_s: float, connect_timeout_s: float | None = None
) -> tuple[int | None, str | None]:
    """POST the signed event once: the status code, and what went wrong (None on a 2xx).
    Resolving and connecting take at most ``connect_timeout_s`` each, every read
    ``timeout_s``."""
    body = json.dumps(row.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Switchboard-Webhooks/1",
        "Switchboard-Event-Id": row.event_id,
        "Switchboard-Event-Type": row.event_type,
        "Switchboard-Timestamp": str(timestamp),
        "Switchboard-Signature": sign(row.secret, timestamp, body),
    }
    try:
        response = http_session().post(
            row.url,
            data=body,
            headers=headers,
            timeout=(connect_timeout_s or timeout_s, timeout_s),
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    response.close()  # the body is never read: only the status matters
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code} {response.reason or ''}".strip()


class DeliveryResult(StrEnum):
    """What one ``webhooks.deliver`` message did."""

    NOT_DUE = "not_due"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED_ATTEMPT = "failed_attempt"


_DEFERRAL_REASONS = {
    Verdict.BREAKER_OPEN: "breaker_open",
    Verdict.PROBING: "breaker_probing",
    Verdict.ENDPOINT_BUSY: "endpoint_busy",
    Verdict.WORKSPACE_BUSY: "workspace_busy",
}


def _admit_or_defer(
    delivery_id: str, transaction: Transaction, lease_s: float
) -> tuple[Any, Target] | DeliveryResult:
    """Claim a due delivery for one attempt if its endpoint and workspace can take it now
    (their leases are then held until ``admission.release``). Otherwise no attempt is
    spent: while its endpoint's breaker is open it is due again when the breaker closes, and
    while a limit is reached it waits (still due) for a slot to be handed on. The claimed row
    and its target, or what happened."""
    admitted: Target | None = None
    try:
        with transaction() as session:
            found = webhooks_repo.delivery_target(session, delivery_id)
            if found is None:
                return DeliveryResult.NOT_DUE
            target = Target(delivery_id, found.endpoint_id, found.workspace_id)
            if not found.due:
                # Sent or rescheduled meanwhile: if this message was a slot handed on, it goes
                # to the next that waits.
                publish_woken(webhook_admission.hand_on(target))
                return DeliveryResult.NOT_DUE
            admission = webhook_admission.admit(target, lease_s)
            publish_woken(admission.woken)
            if admission.verdict is Verdict.ALREADY_HELD:
                return DeliveryResult.NOT_DUE  # another message of it is being sent
            if not admission.admitted:
                reason = _DEFERRAL_REASONS[admission.verdict]
                WEBHOOK_DELIVERIES_DEFERRED.labels(reason).inc()
                if admission.retry_at is not None:
                    webhooks_repo.defer_delivery(
                        session,
                        delivery_id,
                        max(admission.retry_at - time.time(), 0.0),
                        get_settings().webhook_retry_window_s,
                        "not sent: the endpoint did not answer lately (circuit open)",
                    )
                return DeliveryResult.DEFERRED
            admitted = target
            row = webhooks_repo.claim_delivery(session, delivery_id, lease_s=lease_s)
    except BaseException:
        if admitted is not None:
            publish_woken(webhook_admission.release(admitted, None).woken)
        raise
    if row is None:  # another message of the same delivery claimed it first
        publish_woken(webhook_admission.release(target, None).woken)
        return DeliveryResult.NOT_DUE
    return row, target


def deliver(delivery_id: str, transaction: Transaction) -> DeliveryResult:
    """Send one due delivery; delivered on any 2xx, otherwise due again after a backoff (or
    failed at once when its destination is refused). One whose endpoint's breaker is open, or
    whose endpoint or workspace has its limit of deliveries in flight, is due again later
    without an attempt spent or a thread held."""
    settings = get_settings()
    claimed = _admit_or_defer(delivery_id, transaction, settings.webhook_timeout_s * 2 + 5)
    if isinstance(claimed, DeliveryResult):
        return claimed
    row, target = claimed
    status_code: int | None = None
    error: str | None = "not sent"
    refused: str | None = None
    try:
        refused = forbidden_destination(row.url)
        status_code, error = (
            (None, refused)
            if refused
            else _send(row, settings.webhook_timeout_s, settings.webhook_connect_timeout_s)
        )
        with transaction() as session:
            if error is None and status_code is not None:
                webhooks_repo.mark_delivered(session, delivery_id, status_code)
            else:
                webhooks_repo.mark_attempt_failed(
                    session,
                    delivery_id,
                    status_code,
                    error or "no response",
                    retry_delay_s(row.attempts),
                    0.0 if refused else settings.webhook_retry_window_s,
                )
    finally:
        # Any answer closes the endpoint's breaker; none (no name, no connection, no answer
        # in time) counts towards opening it.
        released = webhook_admission.release(target, None if refused else status_code is not None)
        publish_woken(released.woken)
    if released.opened_until is not None:
        log.warning(
            "webhook endpoint %s does not answer: no deliveries to it for %.0f s",
            row.endpoint_id,
            released.opened_until - time.time(),
        )
    if error is None:
        WEBHOOK_ATTEMPTS.labels("delivered").inc()
        return DeliveryResult.DELIVERED
    WEBHOOK_ATTEMPTS.labels("failed").inc()
    log.info("webhook %s attempt %d failed: %s", delivery_id, row.attempts, error)
    return DeliveryResult.FAILED_ATTEMPT
