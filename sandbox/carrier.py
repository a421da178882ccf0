"""A Twilio-compatible carrier on loopback: the REST calls API, asynchronous call lifecycles,
and status callbacks signed exactly as Twilio signs them.

Point the real SDK at it with ``client.api.base_url = carrier.base_url``. It records every call
it was asked to place, so a test can assert that no number was dialed twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import html
import http.client
import itertools
import json
import math
import random
import re
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twilio.request_validator import RequestValidator

from sandbox.config import Rule, SandboxConfig

API_PREFIX = "/2010-04-01/Accounts/"
CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls(?:/([^/.]+))?\.json$")
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
AGENT_CONFIG_PARAMETER = re.compile(r'<Parameter\s+name="agent_config_url"\s+value="([^"]*)"')


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _rfc2822(epoch: float | None) -> str | None:
    return None if epoch is None else format_datetime(datetime.fromtimestamp(epoch, UTC))


def _parse_iso(value: str) -> float:
    text = value.strip().replace("Z", "+00:00")
    if len(text) == 10:  # a date
        text += "T00:00:00+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any] | list[Any]) -> None:
        self.status = status
        self.body = body


class SandboxCarrier:
    """The carrier: ``start()``, ``base_url``, ``calls()``, ``stats()``, ``stop()``."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self._host = host
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._calls: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._attempts: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._stats: Counter[str] = Counter()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        # Each call's callbacks waiting to be posted, in order (the first one is being posted).
        self._posts: dict[str, deque[Callable[[], Coroutine[Any, Any, None]]]] = {}
        self._live = 0
        self._running = False
        # Twilio posts callbacks independently of each other; a receiver that answers slowly
        # (the API gathers callbacks for a few milliseconds) must not hold the others back. They
        # go out from one event loop over keep-alive connections: as many in flight as needed,
        # without a thread each.
        self._loop = asyncio.new_event_loop()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # TwiML fetches (only with fetch_twiml) run on threads.
        self._senders = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sandbox-twiml")
        self._local = threading.local()
        carrier = self

        class Handler(_Handler):
            sandbox = carrier

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 1024
        self._threads: list[threading.Thread] = []

    # -- lifecycle of the carrier itself ------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where the carrier listens, e.g. http://127.0.0.1:8055."""
        return f"http://{self._host}:{self._server.server_address[1]}"

    def start(self) -> SandboxCarrier:
        """Serve and play lifecycles in background threads (once: starting again is a no-op)."""
        if self._running:
            return self
        self._running = True
        for target in (self._server.serve_forever, self._run_events, self._loop.run_forever):
            thread = threading.Thread(target=target, daemon=True, name="sandbox")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and playing; pending callbacks are dropped."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._senders.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(RuntimeError):  # already closed
            self._loop.call_soon_threadsafe(self._close_connections)

    def __enter__(self) -> SandboxCarrier:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- inspection and control ---------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """Every call placed, oldest first (copies)."""
        with self._lock:
            return [json.loads(json.dumps(self._calls[sid])) for sid in self._order]

    def stats(self) -> dict[str, Any]:
        """Counts of requests, calls by status, callbacks."""
        with self._lock:
            by_status = Counter(call["status"] for call in self._calls.values())
            return {
                **self._stats,
                "calls_created": len(self._order),
                "by_status": dict(by_status),
                "live_calls": self._live,
            }

    def configure(self, config: SandboxConfig) -> None:
        """Replace the behaviour; calls under way keep what they were given."""
        with self._lock:
            self.config = config

    def reset(self) -> None:
        """Forget every recorded call and count (the configuration stays)."""
        with self._lock:
            self._calls.clear()
            self._order.clear()
            self._attempts.clear()
            self._requests.clear()
            self._stats.clear()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no lifecycle event or callback is pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._events and self._in_flight == 0:
                    return True
            time.sleep(0.02)
        return False

    # -- the REST API -------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        authorization: str | None,
        received_at: float | None = None,
    ) -> tuple[int, Any]:
        """Answer one request; returns (status, JSON body). ``received_at`` is when its first
        line arrived: a call's ``created_at``, so that pacing is measured at the wire."""
        try:
            if path.startswith("/sandbox/"):
                return self._control(method, path, form)
            match = CALLS_PATH.match(path)
            if match is None:
                raise _Reply(
                    404, twilio_error(404, 20404, f"The requested resource {path} was not found")
                )
            account_sid, call_sid = match.groups()
            self._authenticate(account_sid, authorization)
            if call_sid is None and method == "POST":
                return self._create(
                    account_sid, {k: v for k, v in form.items()}, received_at or time.time()
                )
            if call_sid is None and method == "GET":
                return 200, self._list(account_sid, path, query)
            if call_sid is not None and method == "GET":
                return 200, self._resource(self._find(account_sid, call_sid))
            if call_sid is not None and method == "POST":
                return 200, self._update(account_sid, call_sid, form)
            raise _Reply(405, twilio_error(405, 20004, "Method not allowed"))
        except _Reply as reply:
            return reply.status, reply.body

    def _control(self, method: str, path: str, form: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/sandbox/calls":
            return 200, self.calls()
        if path == "/sandbox/stats":
            return 200, self.stats()
        if path == "/sandbox/reset" and method == "POST":
            self.reset()
            return 200, {"reset": True}
        if path == "/sandbox/config" and method == "POST":
            self.configure(SandboxConfig.from_dict(json.loads(form["_json"][0])))
            return 200, {"configured": True}
        raise _Reply(404, twilio_error(404, 20404, "unknown sandbox endpoint"))

    def _authenticate(self, account_sid: str, authorization: str | None) -> None:
        token = self.config.accounts.get(account_sid)
        presented = None
        if authorization and authorization.startswith("Basic "):
            with contextlib.suppress(ValueError):
                presented = base64.b64decode(authorization[6:]).decode().split(":", 1)
        if token is None or presented != [account_sid, token]:
            raise _Reply(401, twilio_error(401, 20003, "Authenticate"))

    def _draw(self, rule: Rule, to: str, attempt: int) -> random.Random:
        return random.Random(f"{self.config.seed}:{to}:{attempt}")

    def _create(
        self, account_sid: str, form: dict[str, list[str]], received_at: float
    ) -> tuple[int, Any]:
        first = {k: v[0] for k, v in form.items()}
        to, from_ = first.get("To", ""), first.get("From", "")
        with self._lock:
            rule = self.config.rule_for(to)
            attempt = self._attempts[to]
            request_index = self._requests[to]
            self._requests[to] += 1
            self._stats["create_requests_total"] += 1
        # Draws depend on how often this number was asked for, never on thread timing.
        rng = self._draw(rule, to, request_index)
        if rule.api_latency_ms:
            time.sleep(rule.api_latency_ms / 1000)
        if rule.http_error and rng.random() < rule.http_error_probability:
            with self._lock:
                self._stats[f"rejected_{rule.http_error}"] += 1
            raise _Reply(
                rule.http_error,
                twilio_error(
                    rule.http_error,
                    rule.error_code or (20429 if rule.http_error == 429 else 20500),
                    rule.error_message
                    or ("Too Many Requests" if rule.http_error == 429 else "Internal Server Error"),
                ),
            )
        if not E164.match(to):
            raise _Reply(
                400, twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            )
        if not first.get("Url") and not first.get("Twiml"):
            raise _Reply(400, twilio_error(400, 21205, "Url parameter is required."))
        outcome = rule.outcome or "completed"
        if rule.outcome_sequence:
            outcome = rule.outcome_sequence[min(attempt, len(rule.outcome_sequence) - 1)]
        elif isinstance(outcome, dict):
            draw, cumulative = rng.random(), 0.0
            chosen = next(iter(outcome))
            for name, weight in outcome.items():
                cumulative += weight
                if draw < cumulative:
                    chosen = name
                    break
            outcome = chosen
        now = received_at + (rule.api_latency_ms or 0) / 1000
        sid = "CA" + uuid.uuid4().hex
        call: dict[str, Any] = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": from_,
            "status": "queued",
            "outcome": outcome,
            "created_at": now,
            "updated_at": now,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "answered_by": None,
            "url": first.get("Url"),
            "status_callback": first.get("StatusCallback"),
            "events": form.get("StatusCallbackEvent", []) or ["completed"],
            "machine_detection": first.get("MachineDetection"),
            "timeout": int(first.get("Timeout") or 60),
            "sequence": 0,
            "callbacks_sent": [],
            "twiml": None,
            "agent_config": None,
        }
        ring = (
            rule.ring_seconds
            if rule.ring_seconds is not None
            else (self.config.default_ring_seconds)
        )
        talk = (
            rule.talk_seconds
            if rule.talk_seconds is not None
            else (self.config.default_talk_seconds)
        )
        with self._lock:
            self._attempts[to] += 1
            self._calls[sid] = call
            self._order.append(sid)
            self._live += 1
            self._stats["max_live_calls"] = max(self._stats["max_live_calls"], self._live)
        self._schedule(0.0, lambda: self._progress(sid, "initiated", "initiated"))
        self._schedule(0.0, lambda: self._progress(sid, "ringing", "ringing"))
        if ring > call["timeout"]:
            # Like Twilio: a call that rings longer than the request's Timeout ends no-answer.
            ring, outcome = call["timeout"], "no-answer"
            call["outcome"] = outcome
        if outcome in ("completed", "voicemail"):
            self._schedule(ring, lambda: self._answer(sid))
            self._schedule(ring + talk, lambda: self._finish(sid, "completed", talk))
        else:
            self._schedule(ring, lambda: self._finish(sid, outcome, None))
        if rule.timeout_seconds:
            time.sleep(rule.timeout_seconds)
        return 201, self._resource(call)

    def _find(self, account_sid: str, sid: str) -> dict[str, Any]:
        with self._lock:
            call = self._calls.get(sid)
        if call is None or call["account_sid"] != account_sid:
            raise _Reply(
                404, twilio_error(404, 20404, f"The requested resource {sid} was not found")
            )
        return call

    def _update(self, account_sid: str, sid: str, form: dict[str, list[str]]) -> Any:
        call = self._find(account_sid, sid)
        wanted = (form.get("Status") or [""])[0]
        if wanted == "canceled" and call["status"] in ("queued", "initiated", "ringing"):
            self._finish(sid, "canceled", None)
        elif wanted == "completed" and call["status"] == "in-progress":
            talked = time.time() - (call["start_time"] or time.time())
            self._finish(sid, "completed", talked)
        elif wanted:
            raise _Reply(400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect."))
        return self._resource(call)

    def _list(self, account_sid: str, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        with self._lock:
            calls = [self._calls[sid] for sid in reversed(self._order)]
        calls = [c for c in calls if c["account_sid"] == account_sid]
        for key, field in (("To", "to"), ("From", "from"), ("Status", "status")):
            if arg(key):
                calls = [c for c in calls if c[field] == arg(key)]

        # A call that has not started yet is found by its creation time.
        def started(call: dict[str, Any]) -> float:
            return float(call["start_time"] or call["created_at"])

        if arg("StartTime>"):
            after = _parse_iso(arg("StartTime>") or "")
            calls = [c for c in calls if started(c) >= after]
        if arg("StartTime<"):
            before = _parse_iso(arg("StartTime<") or "")
            calls = [c for c in calls if started(c) <= before]
        page_size = int(arg("PageSize") or 50)
        page = int(arg("Page") or 0)
        chunk = calls[page * page_size : (page + 1) * page_size]
        more = len(calls) > (page + 1) * page_size
        base = f"{path}?PageSize={page_size}"
        return {
            "calls": [self._resource(c) for c in chunk],
            "page": page,
            "page_size": page_size,
            "start": page * page_size,
            "end": page * page_size + max(len(chunk) - 1, 0),
            "uri": f"{base}&Page={page}",
            "first_page_uri": f"{base}&Page=0",
            "next_page_uri": f"{base}&Page={page + 1}" if more else None,
            "previous_page_uri": f"{base}&Page={page - 1}" if page else None,
        }

    def _resource(self, call: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            c = dict(call)
        sid, account = c["sid"], c["account_sid"]
        return {
            "sid": sid,
            "account_sid": account,
            "parent_call_sid": None,
            "date_created": _rfc2822(c["created_at"]),
            "date_updated": _rfc2822(c["updated_at"]),
            "to": c["to"],
            "to_formatted": c["to"],
            "from": c["from"],
            "from_formatted": c["from"],
            "phone_number_sid": None,
            "status": c["status"],
            "start_time": _rfc2822(c["start_time"]),
            "end_time": _rfc2822(c["end_time"]),
            "duration": None if c["duration"] is None else str(c["duration"]),
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": c["answered_by"],
            "api_version": "2010-04-01",
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": f"{API_PREFIX}{account}/Calls/{sid}.json",
            "subresource_uris": {},
        }

    # -- call lifecycles ----------------------------------------------------------------------

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._events, (time.monotonic() + delay, next(self._sequence), action))
            self._wake.notify()

    def _run_events(self) -> None:
        while True:
            with self._wake:
                while self._running and (not self._events or self._events[0][0] > time.monotonic()):
                    timeout = self._events[0][0] - time.monotonic() if self._events else None
                    self._wake.wait(timeout)
                if not self._running:
                    return
                _, _, action = heapq.heappop(self._events)
            try:
                action()
            except Exception as exc:  # a bad event must not stop every other call
                with self._lock:
                    self._stats["event_errors"] += 1
                    self._stats[f"event_error:{exc.__class__.__name__}"] += 1

    def _set(self, sid: str, status: str, **fields: Any) -> dict[str, Any] | None:
        """Move a live call to ``status``; None if it already ended."""
        with self._lock:
            call = self._calls[sid]
            if call["status"] in FINAL:
                return None
            call.update(status=status, updated_at=time.time(), **fields)
            if status in FINAL:
                self._live -= 1
            return call

    def _progress(self, sid: str, status: str, event: str) -> None:
        call = self._set(sid, status)
        if call is not None and event in call["events"]:
            self._callback(call)

    def _answer(self, sid: str) -> None:
        with self._lock:
            voicemail = self._calls[sid]["outcome"] == "voicemail"
            detection = self._calls[sid]["machine_detection"]
        # AnsweredBy comes only when the request asked for answering machine detection; without
        # it a voicemail is just a completed call, as on Twilio.
        answered_by = ("machine_end_beep" if voicemail else "human") if detection else None
        call = self._set(sid, "in-progress", start_time=time.time(), answered_by=answered_by)
        if call is None:
            return
        if "answered" in call["events"]:
            self._callback(call)
        if self.config.fetch_twiml and call["url"]:
            self._track(lambda: self._fetch_twiml(sid))

    def _finish(self, sid: str, status: str, talked: float | None) -> None:
        duration = math.ceil(talked) if talked is not None else 0
        call = self._set(sid, status, end_time=time.time(), duration=duration)
        if call is not None:
            # Twilio always sends the final status to a status callback.
            self._callback(call)

    # -- callbacks ----------------------------------------------------------------------------

    def _track(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._in_flight += 1

        def run() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self._in_flight -= 1

        self._senders.submit(run)

    def _callback(self, call: dict[str, Any]) -> None:
        if not call["status_callback"] or self.config.rule_for(call["to"]).drop_callbacks:
            return
        with self._lock:
            params = {
                "AccountSid": call["account_sid"],
                "CallSid": call["sid"],
                "CallStatus": call["status"],
                "From": call["from"],
                "To": call["to"],
                "Direction": "outbound-api",
                "ApiVersion": "2010-04-01",
                "Timestamp": _rfc2822(time.time()) or "",
                "SequenceNumber": str(call["sequence"]),
                "CallbackSource": "call-progress-events",
            }
            call["sequence"] += 1
            if call["status"] in FINAL:
                params["CallDuration"] = str(call["duration"] or 0)
                params["Duration"] = str(math.ceil((call["duration"] or 0) / 60))
            if call["answered_by"]:
                params["AnsweredBy"] = call["answered_by"]
            if call["status"] == "failed":
                params["SipResponseCode"] = "500"
                params["ErrorCode"] = "32009"
            url = call["status_callback"]
            token = self.config.accounts.get(call["account_sid"], "")
            copies = 2 if random.random() < self.config.duplicate_callbacks_probability else 1
        for _ in range(copies):
            self._post_in_order(call, lambda: self._post_callback(call, url, params, token))

    def _post_in_order(
        self, call: dict[str, Any], post: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Post one call's callbacks one after another, in the order they were made (different
        calls' callbacks go out in parallel)."""
        with self._lock:
            queue = self._posts.setdefault(call["sid"], deque())
            queue.append(post)
            if len(queue) > 1:
                return  # the post in flight sends this one after it
            self._in_flight += 1

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
                    self._in_flight -= 1

        if self._running:
            self._loop.call_soon_threadsafe(self._start_task, drain)

    def _start_task(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # The loop keeps only a weak reference to a task: hold it until it is done.
        task = self._loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_callback(
        self, call: dict[str, Any], url: str, params: dict[str, str], token: str
    ) -> None:
        if self.config.shuffle_callbacks:
            await asyncio.sleep(random.random() * 0.05)
        signature = RequestValidator(token).compute_signature(url, params)
        for _ in range(self.config.callback_retries + 1):
            try:
                status = await asyncio.wait_for(
                    self._post(url, urllib.parse.urlencode(params).encode(), signature),
                    self.config.callback_timeout_s,
                )
            except (TimeoutError, OSError, EOFError, ValueError):
                status = 0
            if 200 <= status < 300:
                with self._lock:
                    call["callbacks_sent"].append(params["CallStatus"])
                    self._stats["callbacks_sent"] += 1
                return
        with self._lock:
            self._stats["callbacks_failed"] += 1

    async def _post(self, url: str, body: bytes, signature: str) -> int:
        """POST a signed form over a keep-alive connection to the URL's host; the status."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        idle = self._idle.setdefault(key, [])
        while idle:  # a kept connection the receiver may have closed meanwhile: one more try
            connection = idle.pop()
            try:
                return await self._exchange(key, connection, request)
            except (OSError, EOFError, ValueError):
                connection[1].close()
        return await self._exchange(key, await asyncio.open_connection(*key), request)

    async def _exchange(self, key: tuple[str, int], connection: _Connection, request: bytes) -> int:
        """One request and its response; the connection is kept for the next one unless the
        receiver closes it."""
        reader, writer = connection
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise EOFError("connection closed")
            status = int(status_line.split()[1])
            length, chunked, keep = 0, False, True
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value
                elif name == "connection":
                    keep = value != "close"
            if chunked:
                while size := int((await reader.readline()).split(b";")[0], 16):
                    await reader.readexactly(size + 2)
                await reader.readline()
            elif length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.setdefault(key, []).append(connection)
        else:
            writer.close()
        return status

    def _close_connections(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()
        self._loop.stop()

    def _fetch_twiml(self, sid: str) -> None:
        with self._lock:
            call = self._calls[sid]
            url, token = call["url"], self.config.accounts.get(call["account_sid"], "")
            params = {
                "AccountSid": call["account_sid"],
                "CallSid": sid,
                "CallStatus": "in-progress",
                "From": call["from"],
                "To": call["to"],
                "Direction": "outbound-api",
                "ApiVersion": "2010-04-01",
            }
        signature = RequestValidator(token).compute_signature(url, params)
        try:
            status, body = self._http(
                "POST",
                url,
                urllib.parse.urlencode(params).encode(),
                {
                    "X-Twilio-Signature": signature,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            twiml = body.decode()
            config = None
            match = AGENT_CONFIG_PARAMETER.search(twiml)
            if status == 200 and match:
                config_status, config_body = self._http(
                    "GET", html.unescape(match.group(1)), None, {}
                )
                config = (
                    json.loads(config_body) if config_status == 200 else {"error": config_status}
                )
        except (OSError, ValueError) as exc:
            twiml, config = f"error: {exc!r}", None
        with self._lock:
            call["twiml"], call["agent_config"] = twiml, config

    def _http(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request over this thread's keep-alive connection to the URL's host."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        connections: dict[tuple[str, int], http.client.HTTPConnection] = getattr(
            self._local, "connections", {}
        )
        self._local.connections = connections
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for fresh in (False, True):
            connection = connections.get(key)
            if connection is None or fresh:
                connection = http.client.HTTPConnection(
                    *key, timeout=self.config.callback_timeout_s
                )
                connections[key] = connection
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                if fresh:
                    raise
        raise AssertionError("unreachable")


class _Handler(BaseHTTPRequestHandler):
    sandbox: SandboxCarrier
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write with Nagle off: no 40 ms delayed-ACK stalls.
    disable_nagle_algorithm = True
    received_at = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the carrier is driven thousands of times a second."""

    def parse_request(self) -> bool:
        self.received_at = time.time()  # before the headers are parsed
        return super().parse_request()

    def _serve(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if parts.path == "/sandbox/config":
            form = {"_json": [raw.decode() or "{}"]}
        else:
            form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        status, payload = self.sandbox.handle(
            method, parts.path, query, form, self.headers.get("Authorization"), self.received_at
        )
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
