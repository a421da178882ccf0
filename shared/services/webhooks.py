"""Signed, durable webhooks: endpoints, events written with the change that causes them, and
delivery with exponential backoff.

Every delivery is a POST of the event's JSON body with these headers:

* ``Switchboard-Event-Id``: the event's id, the same on every retry and for every endpoint;
* ``Switchboard-Event-Type``: ``call.ended`` or ``batch.completed``;
* ``Switchboard-Timestamp``: Unix seconds when this attempt was signed;
* ``Switchboard-Signature``: ``v1=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` keyed with
  the endpoint's secret.

A receiver recomputes the signature over the raw body and rejects a mismatch or a timestamp
more than five minutes away from its clock (``verify_signature`` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import Session
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from shared import messaging
from shared.db import after_commit
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEndpoint
from shared.repositories import webhooks as webhooks_repo
from shared.schemas import (
    WebhookDeliveryResponse,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointResponse,
)
from shared.settings import get_settings
from shared.timestamps import unix, unix_or_none

log = logging.getLogger(__name__)

Transaction = Callable[[], AbstractContextManager[Session]]


SIGNATURE_TOLERANCE_S = 300
_local = threading.local()


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


def _publish(session: Session, delivery_ids: Sequence[str]) -> None:
    if delivery_ids:
        ids = list(delivery_ids)

        def publish() -> None:
            messaging.publish_many(messaging.TASK_DELIVER_WEBHOOK, ([i] for i in ids))

        after_commit(session, publish)


def calls_ended(session: Session, call_ids: Sequence[str]) -> None:
    """In the transaction that made these calls final: their ``call.ended`` deliveries."""
    _publish(session, webhooks_repo.add_call_ended(session, call_ids))


def batch_completed(session: Session, batch_id: str) -> None:
    """In the transaction that completed the batch: its ``batch.completed`` deliveries."""
    _publish(session, webhooks_repo.add_batch_completed(session, batch_id))


def _endpoint_response(row: WebhookEndpoint) -> WebhookEndpointResponse:
    return WebhookEndpointResponse(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        created_at_unix=unix(row.created_at),
    )


def create_endpoint(
    session: Session, workspace_id: str, body: WebhookEndpointCreate
) -> WebhookEndpointCreated:
    """Register an endpoint; its secret is returned here only."""
    refused = _forbidden_destination(str(body.url))
    if refused is not None:
        raise ValidationFailed.one(["body", "url"], refused, "forbidden_destination")
    endpoint_id = new_id("whk")
    secret = body.secret or "whsec_" + secrets.token_hex(24)
    event_types: list[str] = sorted(set(body.event_types))
    webhooks_repo.insert_endpoint(
        session,
        {
            "id": endpoint_id,
            "workspace_id": workspace_id,
            "url": str(body.url),
            "secret": secret,
            "event_types": event_types,
        },
    )
    session.flush()
    return WebhookEndpointCreated(
        id=endpoint_id,
        url=str(body.url),
        event_types=event_types,
        created_at_unix=int(time.time()),
        secret=secret,
    )


def list_endpoints(session: Session, workspace_id: str) -> list[WebhookEndpointResponse]:
    return [_endpoint_response(row) for row in webhooks_repo.list_endpoints(session, workspace_id)]


def delete_endpoint(session: Session, workspace_id: str, endpoint_id: str) -> None:
    if not webhooks_repo.disable_endpoint(session, workspace_id, endpoint_id):
        raise NotFound(["path", "endpoint_id"], f"webhook endpoint '{endpoint_id}' not found")


def _delivery_response(row: WebhookDelivery) -> WebhookDeliveryResponse:
    return WebhookDeliveryResponse(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at_unix=unix(row.created_at),
        next_attempt_at_unix=unix_or_none(row.next_attempt_at) if row.status == "pending" else None,
        delivered_at_unix=unix_or_none(row.delivered_at),
        payload=row.payload,
    )


def list_deliveries(
    session: Session, workspace_id: str, limit: int, last_doc: str | None, status: str | None
) -> tuple[list[WebhookDeliveryResponse], bool]:
    """A page of deliveries, newest first, and whether more follow."""
    rows = webhooks_repo.list_deliveries(session, workspace_id, limit + 1, last_doc, status)
    return [_delivery_response(row) for row in rows[:limit]], len(rows) > limit


def _non_public(host: str, address: str) -> str | None:
    """Why ``address`` (of ``host``) is inside our network, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not ip.is_global or ip.is_multicast:
        return f"destination {host} resolves to a non-public address ({ip})"
    return None


def _forbidden_destination(url: str) -> str | None:
    """Why ``url`` may not be sent to (an address inside our network), or None.

    Checked when an endpoint is registered and again before every delivery, so a name that
    later resolves inward is refused at once. The address a delivery actually connects to is
    checked too (``_PublicOnlyAdapter``), so a name that changes its answer between this check
    and the connection (DNS rebinding) is refused as well.
    """
    if get_settings().webhook_allow_private_destinations:
        return None
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return None  # unresolvable now: the attempt fails and is retried like any other
    for address in addresses:
        reason = _non_public(host, address)
        if reason is not None:
            return reason
    return None


def _checked_peer(connection: HTTPConnection, sock: socket.socket) -> socket.socket:
    """The connected socket, unless its peer is inside our network (then closed, refused)."""
    if get_settings().webhook_allow_private_destinations:
        return sock
    reason = _non_public(connection.host, str(sock.getpeername()[0]))
    if reason is not None:
        sock.close()
        raise NewConnectionError(connection, f"refused: {reason}")
    return sock


class _PublicOnlyHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_peer(self, super()._new_conn())


class _PublicOnlyHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_peer(self, super()._new_conn())


class _PublicOnlyHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicOnlyHTTPConnection


class _PublicOnlyHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicOnlyHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    """Checks the address every new connection reached, not only the one a name resolved to."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicOnlyHTTPPool,
            "https": _PublicOnlyHTTPSPool,
        }


def _http() -> requests.Session:
    """One HTTP session per worker thread (connections are kept alive per receiver)."""
    session: requests.Session | None = getattr(_local, "http", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False
        adapter = _PublicOnlyAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.http = session
    return session


def retry_delay_s(attempts: int) -> float:
    """How long after the ``attempts``-th failed attempt the next one is due."""
    settings = get_settings()
    return float(
        min(
            settings.webhook_retry_base_s * 2 ** max(attempts - 1, 0),
            settings.webhook_retry_max_delay_s,
        )
    )


def _send(row: Any, timeout_s: float) -> tuple[int | None, str | None]:
    """POST the signed event once: the status code, and what went wrong (None on a 2xx)."""
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
        response = _http().post(
            row.url,
            data=body,
            headers=headers,
            timeout=timeout_s,
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    response.close()  # the body is never read: only the status matters
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code} {response.reason or ''}".strip()


def deliver(delivery_id: str, transaction: Transaction) -> str:
    """Send one due delivery; delivered on any 2xx, otherwise due again after a backoff (or
    failed at once when its destination is refused)."""
    settings = get_settings()
    with transaction() as session:
        row = webhooks_repo.claim_delivery(
            session, delivery_id, lease_s=settings.webhook_timeout_s * 2 + 5
        )
    if row is None:
        return "not_due"
    refused = _forbidden_destination(row.url)
    status_code, error = (None, refused) if refused else _send(row, settings.webhook_timeout_s)
    with transaction() as session:
        if error is None and status_code is not None:
            webhooks_repo.mark_delivered(session, delivery_id, status_code)
            return "delivered"
        webhooks_repo.mark_attempt_failed(
            session,
            delivery_id,
            status_code,
            error or "no response",
            retry_delay_s(row.attempts),
            0.0 if refused else settings.webhook_retry_window_s,
        )
    log.info("webhook %s attempt %d failed: %s", delivery_id, row.attempts, error)
    return "failed_attempt"
