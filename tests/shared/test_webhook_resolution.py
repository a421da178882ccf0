"""A webhook delivery waits a bounded time for its receiver's name, whatever the name server
does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from shared.settings import get_settings
from shared.webhooks import delivery, destinations

CONNECT_TIMEOUT_S = 0.3


class _Accept(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()


@pytest.fixture(autouse=True)
def _private_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def hanging_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names ending in ``.hang`` never resolve until the test ends; the names asked for."""
    asked: list[str] = []
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".hang"):
            asked.append(host)
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(destinations, "_resolver", destinations._Resolver())
    yield asked
    release.set()


def _send_on_new_thread(url: str) -> tuple[int | None, str | None]:
    row = SimpleNamespace(payload={}, event_id="evt", event_type="call.ended", secret="s", url=url)
    result: list[tuple[int | None, str | None]] = []
    thread = threading.Thread(
        target=lambda: result.append(delivery._send(row, 5.0, CONNECT_TIMEOUT_S))
    )
    thread.start()
    thread.join()
    return result[0]


def test_a_name_server_that_never_answers_holds_a_delivery_for_the_connect_timeout_only(
    hanging_names: list[str],
):
    started = time.monotonic()
    status, error = _send_on_new_thread("https://receiver.hang/hooks")
    assert time.monotonic() - started < 1.5
    assert status is None and error is not None and "name resolution timed out" in error
    # The next delivery to that name fails as fast without asking the name server again.
    started = time.monotonic()
    status, error = _send_on_new_thread("https://receiver.hang/hooks")
    assert time.monotonic() - started < 1.0
    assert status is None and error is not None
    assert hanging_names == ["receiver.hang"]


def test_names_that_resolve_are_reached(hanging_names: list[str]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # A hanging name elsewhere does not hold up this one.
        _send_on_new_thread("https://other.hang/hooks")
        url = f"http://localhost:{server.server_address[1]}/hooks"
        assert _send_on_new_thread(url) == (204, None)
    finally:
        server.shutdown()
        server.server_close()
