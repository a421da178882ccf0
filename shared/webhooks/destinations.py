"""Where a webhook may be sent: public addresses only, names resolved with a bounded wait.

A destination is checked when its endpoint is registered and again before every delivery, and
the address each new connection actually reaches is checked too, so a name that turns inward
later (DNS rebinding included) is refused.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from shared.settings import get_settings

_local = threading.local()


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


def forbidden_destination(url: str) -> str | None:
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


def http_session() -> requests.Session:
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
