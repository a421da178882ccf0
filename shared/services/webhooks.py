"""Signed, durable webhooks: endpoints, events written with the change that causes them, and
delivery with exponential backoff.

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
import ipaddress
import json
import logging
import queue
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import Session
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from shared import messaging, webhook_admission
from shared.db import after_commit
from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES_DEFERRED
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
from shared.webhook_admission import Target, Verdict

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


def _publish_woken(delivery_ids: Sequence[str]) -> None:
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
                _publish_woken(webhook_admission.enqueue(workspace_id, ids))

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


class _Resolver:
    """Host names resolved on a few threads of their own, each wait bounded.

    ``getaddrinfo`` cannot be interrupted, and a name server that never answers would hold a
    delivery's thread for as long as the system resolver retries (tens of seconds). Here the
    delivery waits at most its timeout; a name already being resolved is waited on, not asked
    again, and an answer (or a failure) is kept for ``KEEP_S``, so a name server that hangs
    holds at most one of these threads per name while every delivery to it fails fast.
    """

    THREADS = 8
    KEEP_S = 10.0
    MAX_NAMES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, int], tuple[float, Future[list[Any]]]] = {}
        self._jobs: queue.SimpleQueue[tuple[str, int, Future[list[Any]]]] = queue.SimpleQueue()
        self._threads = 0

    def addresses(self, host: str, port: int, timeout_s: float) -> list[Any]:
        """``getaddrinfo(host, port)`` for TCP; ``socket.gaierror`` when the name does not
        resolve, or resolving takes longer than ``timeout_s``."""
        future = self._lookup(host, port)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise socket.gaierror(
                socket.EAI_AGAIN, f"name resolution timed out after {timeout_s:g} s"
            ) from None

    def _lookup(self, host: str, port: int) -> Future[list[Any]]:
        now = time.monotonic()
        with self._lock:
            key = (host, port)
            kept = self._answers.get(key)
            if kept is not None and (not kept[1].done() or now - kept[0] < self.KEEP_S):
                return kept[1]
            if len(self._answers) >= self.MAX_NAMES:
                self._answers = {k: v for k, v in self._answers.items() if not v[1].done()}
            future: Future[list[Any]] = Future()
            self._answers[key] = (now, future)
            if self._threads < self.THREADS:
                self._threads += 1
                threading.Thread(target=self._work, name="webhook-resolver", daemon=True).start()
        self._jobs.put((host, port, future))
        return future

    def _work(self) -> None:
        while True:
            host, port, future = self._jobs.get()
            try:
                future.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:
                future.set_exception(exc)
            with self._lock:
                # Kept from when the answer came, not from when it was asked.
                if self._answers.get((host, port), (0.0, None))[1] is future:
                    self._answers[(host, port)] = (time.monotonic(), future)


_resolver = _Resolver()


def _forbidden_destination(url: str) -> str | None:
    """Why ``url`` may not be sent to (an address inside our network), or None.

    Checked when an endpoint is registered and again before every delivery, so a name that
    later resolves inward is refused at once. The address a delivery actually connects to is
    checked too (``_PublicOnlyAdapter``), so a name that changes its answer between this check
    and the connection (DNS rebinding) is refused as well.
    """
    if get_settings().webhook_allow_private_destinations:
        return None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = _resolver.addresses(host, port, get_settings().webhook_connect_timeout_s)
    except OSError:
        return None  # unresolvable now: the attempt fails and is retried like any other
    for address in {str(info[4][0]) for info in infos}:
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


def _connect(connection: HTTPConnection, connect: Callable[[], socket.socket]) -> socket.socket:
    """``connect`` (the connection's own ``_new_conn``) to each address the bounded resolver
    found for the connection's host in turn, the first that answers; its peer checked."""
    name = connection._dns_host
    timeout = connection.timeout
    if not isinstance(timeout, int | float):
        timeout = get_settings().webhook_connect_timeout_s
    try:
        infos = _resolver.addresses(name, connection.port or 0, float(timeout))
    except socket.gaierror as exc:
        raise NameResolutionError(connection.host, connection, exc) from exc
    failure: Exception | None = None
    for address in dict.fromkeys(str(info[4][0]) for info in infos):
        connection._dns_host = address  # connect to this address; the name stays for TLS
        try:
            sock = connect()
        except (NewConnectionError, OSError) as exc:
            failure = exc
            continue
        finally:
            connection._dns_host = name
        return _checked_peer(connection, sock)
    assert failure is not None
    raise failure


class _PublicOnlyHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect(self, super()._new_conn)


class _PublicOnlyHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect(self, super()._new_conn)


class _PublicOnlyHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicOnlyHTTPConnection


class _PublicOnlyHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicOnlyHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    """Resolves names with a bounded wait, and checks the address every new connection
    reached, not only the one a name resolved to."""

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
        response = _http().post(
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
    (their leases are then held until ``webhook_admission.release``). Otherwise no attempt is
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
                _publish_woken(webhook_admission.hand_on(target))
                return DeliveryResult.NOT_DUE
            admission = webhook_admission.admit(target, lease_s)
            _publish_woken(admission.woken)
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
            _publish_woken(webhook_admission.release(admitted, None).woken)
        raise
    if row is None:  # another message of the same delivery claimed it first
        _publish_woken(webhook_admission.release(target, None).woken)
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
        refused = _forbidden_destination(row.url)
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
        _publish_woken(released.woken)
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
