"""A Twilio-compatible carrier on loopback: the REST calls API, asynchronous call lifecycles,
and status callbacks signed exactly as Twilio signs them.

Point the real SDK at it with ``client.api.base_url = carrier.base_url``. It records every call
it was asked to place, so a test can assert that no number was dialed twice.

One event loop (``sandbox.loop``) on a thread of its own does everything: uvicorn serves the
Starlette routes of ``sandbox.app`` on it, ``sandbox.calls`` plays each call's lifecycle there
as a task, and ``sandbox.callbacks`` posts the callbacks from it over one httpx connection pool.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import uvicorn

from sandbox.app import build_app
from sandbox.calls import Calls
from sandbox.config import SandboxConfig
from sandbox.loop import LoopThread


class SandboxCarrier:
    """The carrier: ``start()``, ``base_url``, ``calls()``, ``stats()``, ``stop()``."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._host = host
        self._loop = LoopThread("sandbox")
        self._calls = Calls(config or SandboxConfig(), self._loop)
        # Bound now, so that base_url is known before start (and a port asked for is taken).
        self._socket = socket.create_server((host, port), backlog=1024)
        self._server = uvicorn.Server(
            uvicorn.Config(
                build_app(self._calls),
                http="auto",  # httptools where installed (it is locked), else h11
                proxy_headers=False,
                lifespan="off",
                access_log=False,
                log_config=None,
                log_level="warning",
                server_header=False,
                date_header=False,
                backlog=1024,
                # Clients (the workers' Twilio SDK) keep their connections as long as they like.
                timeout_keep_alive=300,
            )
        )
        self._running = False

    # -- lifecycle of the carrier itself ------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where the carrier listens, e.g. http://127.0.0.1:8055."""
        return f"http://{self._host}:{self._socket.getsockname()[1]}"

    @property
    def config(self) -> SandboxConfig:
        """The behaviour in force."""
        return self._calls.config

    @config.setter
    def config(self, config: SandboxConfig) -> None:
        self.configure(config)

    def start(self) -> SandboxCarrier:
        """Serve and play lifecycles in a background thread (once: starting again is a no-op)."""
        if self._running:
            return self
        self._running = True
        self._loop.start()
        self._loop.run(self._serve())
        return self

    async def _serve(self) -> None:
        # uvicorn's startup alone: its main loop (a tick every 0.1 s, for the Date header and
        # signals, both unused here) would only add a fifth of a second to every stop.
        await self._calls.outbox.open()
        config = self._server.config
        config.load()
        self._server.lifespan = config.lifespan_class(config)  # "off": does nothing
        await self._server.startup(sockets=[self._socket])

    def stop(self) -> None:
        """Stop serving and playing; pending callbacks are dropped."""
        running, self._running = self._running, False
        if not running:
            self._socket.close()
            self._loop.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self._loop.run(self._shut_down(), timeout=15)
        self._loop.close()

    async def _shut_down(self) -> None:
        await self._calls.outbox.close()  # lifecycles see it and end; callbacks are dropped
        for server in self._server.servers:
            server.close()
        for connection in list(self._server.server_state.connections):
            connection.shutdown()  # requests held open (timeout rules) are dropped below
        await self._loop.cancel_all()
        self._socket.close()

    def __enter__(self) -> SandboxCarrier:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- inspection and control ---------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """Every call placed, oldest first (copies)."""
        return self._calls.records()

    def stats(self) -> dict[str, Any]:
        """Counts of requests, calls by status, callbacks: ``callbacks_sent`` (answered 2xx),
        ``callbacks_failed`` (tries that failed, and ``callbacks_failed_<ct|rt|4xx|5xx>`` by
        what failed), ``callbacks_resent``, and ``callbacks_lost`` (given up)."""
        return self._calls.counts()

    def configure(self, config: SandboxConfig) -> None:
        """Replace the behaviour; calls under way keep what they were given."""
        with self._calls.lock:
            self._calls.config = config

    def reset(self) -> None:
        """Forget every recorded call and count (the configuration stays)."""
        self._calls.reset()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no lifecycle event or callback is pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._calls.idle():
                return True
            time.sleep(0.02)
        return False
