"""The sandbox carrier's outgoing requests, from its event loop: status and AMD callbacks,
signed and resent as Twilio does, one call's callbacks one after another, over keep-alive
connections (``sandbox.wire``); and the TwiML fetch on answer, over an ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import html
import json
import random
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sandbox import dialects
from sandbox.config import (
    FAILURE_4XX,
    FAILURE_5XX,
    FAILURE_CONNECT,
    FAILURE_READ,
    CallbackPolicy,
    SandboxConfig,
)
from sandbox.loop import LoopThread
from sandbox.wire import KeptConnections, NotConnected

FORM = "application/x-www-form-urlencoded"


def _label(params: dict[str, str]) -> str:
    """How a sent or lost callback is listed: its call status, or ``amd:`` and the verdict."""
    return params.get("CallStatus") or f"amd:{params.get('AnsweredBy', '')}"


class Outbox:
    """Posts callbacks and fetches TwiML for the carrier; counts into its ``stats``, under
    its ``lock``."""

    def __init__(
        self,
        lock: threading.Lock,
        stats: Counter[str],
        loop: LoopThread,
        config: Callable[[], SandboxConfig],
    ) -> None:
        self._lock = lock
        self._stats = stats
        self._loop = loop
        self._config = config
        self._connections = KeptConnections()
        self._client: httpx.AsyncClient | None = None
        # Each call's callbacks waiting to be posted, in order (the first one is being posted).
        self._posts: dict[str, deque[Callable[[], Awaitable[None]]]] = {}
        self.in_flight = 0  # callback queues being drained and TwiML fetches, under the lock
        self.running = False

    async def open(self) -> None:
        """Start sending (on the loop)."""
        self.running = True

    async def close(self) -> None:
        """Drop the pending callbacks and close the connections (on the loop)."""
        self.running = False
        self._connections.close()
        if self._client is not None:
            await self._client.aclose()

    # -- status and AMD callbacks -------------------------------------------------------------

    def post(self, call: dict[str, Any], url: str, params: dict[str, str], token: str) -> None:
        """Post one callback after the call's earlier ones (different calls' callbacks go out
        in parallel)."""

        async def post() -> None:
            await self._post_callback(call, url, params, token)

        with self._lock:
            queue = self._posts.setdefault(call["sid"], deque())
            queue.append(post)
            if len(queue) > 1:
                return  # the post in flight sends this one after it
            self.in_flight += 1

        async def drain() -> None:
            try:
                while True:
                    with self._lock:
                        current = queue[0]
                    try:
                        await current()
                    except Exception as exc:  # one failed post must not hold back the next ones
                        with self._lock:
                            self._stats[f"callback_error:{exc.__class__.__name__}"] += 1
                    with self._lock:
                        queue.popleft()
                        if not queue:
                            del self._posts[call["sid"]]
                            return
            finally:
                with self._lock:
                    self.in_flight -= 1

        if self.running:
            self._loop.spawn(drain)

    async def _post_callback(
        self, call: dict[str, Any], url: str, params: dict[str, str], token: str
    ) -> None:
        """Post one callback, and resend it as Twilio would: as the connection overrides of
        the URL's fragment ask (Twilio's defaults without one), the fragment never sent."""
        if self._config().shuffle_callbacks:
            await asyncio.sleep(random.random() * 0.05)
        url, policy = CallbackPolicy.of_url(url)
        # Signed as the call's provider signs it (Twilio's, or Vobiz's V3).
        headers = {"Content-Type": FORM, **dialects.of(call).signature_headers(token, url, params)}
        body = urllib.parse.urlencode(params).encode()
        started = time.monotonic()
        deadline = started + policy.total_timeout_ms / 1000
        resend = 0
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            connect_s = min(policy.connect_timeout_ms / 1000, left)
            read_s = min(policy.read_timeout_ms / 1000, left)
            failure = await self._try(url, body, headers, connect_s, read_s)
            if failure is None:
                with self._lock:
                    call["callbacks_sent"].append(_label(params))
                    self._stats["callbacks_sent"] += 1
                return
            resend += 1
            pause = policy.resends(failure, resend, time.monotonic() - started)
            with self._lock:
                self._stats["callbacks_failed"] += 1
                self._stats[f"callbacks_failed_{failure}"] += 1
                if pause is None:
                    call["callbacks_lost"].append(_label(params))
                    self._stats["callbacks_lost"] += 1
                else:
                    self._stats["callbacks_resent"] += 1
            if pause is None:
                return
            await asyncio.sleep(pause)

    async def _try(
        self, url: str, body: bytes, headers: dict[str, str], connect_s: float, read_s: float
    ) -> str | None:
        """One try at posting a callback, connected within ``connect_s`` and answered within
        ``read_s``: None when it was answered 2xx, else what failed."""
        try:
            status = await self._connections.post(url, body, headers, connect_s, read_s)
        except NotConnected:
            return FAILURE_CONNECT  # refused, unreachable, or not connected in time
        except (TimeoutError, OSError, EOFError, ValueError):
            return FAILURE_READ  # connected, but no answer came in time
        if 200 <= status < 300:
            return None
        return FAILURE_5XX if status >= 500 else FAILURE_4XX

    # -- the TwiML fetch -----------------------------------------------------------------------

    def fetch_twiml(
        self,
        call: dict[str, Any],
        url: str,
        token: str,
        params: dict[str, str],
        with_config: bool = True,
    ) -> None:
        """Fetch the call's answer document (TwiML, VobizXML) as its provider does on answer,
        and (``with_config``) the agent config it points to, as a voice-agent runtime would;
        both are recorded on the call."""
        with self._lock:
            self.in_flight += 1
        dialect = dialects.of(call)

        async def fetch() -> None:
            try:
                twiml, config = await self._fetch(dialect, url, token, params, with_config)
                with self._lock:
                    call["twiml"], call["agent_config"] = twiml, config
            finally:
                with self._lock:
                    self.in_flight -= 1

        self._loop.spawn(fetch)

    async def _fetch(
        self,
        dialect: dialects.Dialect,
        url: str,
        token: str,
        params: dict[str, str],
        with_config: bool,
    ) -> tuple[str, Any]:
        if self._client is None:  # made on first use: only fetch_twiml asks for it
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        client = self._client
        timeout = self._config().callback_timeout_s
        headers = {"Content-Type": FORM, **dialect.signature_headers(token, url, params)}
        body = urllib.parse.urlencode(params).encode()
        try:
            response = await client.post(url, content=body, headers=headers, timeout=timeout)
            twiml = response.text
            config = None
            match = dialect.agent_config.search(twiml)
            if response.status_code == 200 and match and with_config:
                found = await client.get(html.unescape(match.group(1)), timeout=timeout)
                status = found.status_code
                config = json.loads(found.content) if status == 200 else {"error": status}
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return f"error: {exc!r}", None
        return twiml, config
