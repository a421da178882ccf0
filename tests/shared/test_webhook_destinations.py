"""A webhook delivery connects only to public addresses, whatever a name resolved to before."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from shared.settings import get_settings
from shared.webhooks import delivery


class _Accept(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def receiver_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


def _send_on_new_thread(url: str) -> tuple[int | None, str | None]:
    # A fresh thread has a fresh HTTP session: no connection kept alive from another test.
    row = SimpleNamespace(payload={}, event_id="evt", event_type="call.ended", secret="s", url=url)
    result: list[tuple[int | None, str | None]] = []
    thread = threading.Thread(target=lambda: result.append(delivery._send(row, 5.0)))
    thread.start()
    thread.join()
    return result[0]


def _allow_private(monkeypatch: pytest.MonkeyPatch, allowed: bool) -> None:
    monkeypatch.setenv("SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS", str(allowed).lower())
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()


def test_the_connected_address_is_checked_not_only_the_resolved_name(
    monkeypatch: pytest.MonkeyPatch, receiver_url: str
):
    # As if the name had resolved to a public address when it was checked, then to loopback
    # when the delivery connected (DNS rebinding): the connection itself is refused.
    _allow_private(monkeypatch, False)
    status, error = _send_on_new_thread(receiver_url)
    assert status is None
    assert error is not None and "non-public address (127.0.0.1)" in error


def test_private_receivers_are_reached_when_allowed(
    monkeypatch: pytest.MonkeyPatch, receiver_url: str
):
    _allow_private(monkeypatch, True)
    assert _send_on_new_thread(receiver_url) == (204, None)
