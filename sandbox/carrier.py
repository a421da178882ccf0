"""A Twilio-compatible carrier on loopback: the REST calls API, asynchronous call lifecycles,
and status callbacks signed exactly as Twilio signs them.

Point the real SDK at it with ``client.api.base_url = carrier.base_url``. It records every call
it was asked to place, so a test can assert that no number was dialed twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import html
import http.client
import json
import math
import random
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sandbox.config import (
    FAILURE_4XX,
    FAILURE_5XX,
    FAILURE_CONNECT,
    FAILURE_READ,
    CallbackPolicy,
    Rule,
    SandboxConfig,
)
from shared.telephony.twilio import request_signature

API_PREFIX = "/2010-04-01/Accounts/"
CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls(?:/([^/.]+))?\.json$")
ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/([^/.]+)\.json$")
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CALLBACK_COUNTS = ("callbacks_sent", "callbacks_failed", "callbacks_resent", "callbacks_lost")
AGENT_CONFIG_PARAMETER = re.compile(r'<Parameter\s+name="agent_config_url"\s+value="([^"]*)"')
SAY = re.compile(r"<Say[^>]*>(.*?)</Say>", re.DOTALL)


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _rfc2822(epoch: float | None) -> str | None:
    return None if epoch is None else _rfc2822_second(int(epoch))


@functools.lru_cache(maxsize=64)
def _rfc2822_second(epoch: int) -> str:
    # RFC 2822 dates have whole seconds: one formatting per second serves every call.
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


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


class _NotConnected(Exception):
    """No connection to a callback's host was made (refused, or not within the timeout)."""


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any] | list[Any]) -> None:
        self.status = status
        self.body = body


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (the API's too; a dependency except on Windows), asyncio's without."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SandboxCarrier:
    """The carrier: ``start()``, ``base_url``, ``calls()``, ``stats()``, ``stop()``."""

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self._host = host
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._attempts: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._stats: Counter[str] = Counter()
        self._lifecycles = 0  # calls whose lifecycle is still being played
        self._in_flight = 0
        # Each call's callbacks waiting to be posted, in order (the first one is being posted).
        self._posts: dict[str, deque[Callable[[], Coroutine[Any, Any, None]]]] = {}
        self._live = 0
        self._running = False
        # One event loop serves the REST API, plays every call's lifecycle and posts the
        # callbacks. Twilio posts callbacks independently of each other; a receiver that answers
        # slowly (the API gathers callbacks for a few milliseconds) must not hold the others
        # back: they go out over keep-alive connections, as many in flight as needed, without a
        # thread each. Simulated API latency and timeouts are waited out on the loop, too.
        self._loop = _new_event_loop()
        self._loop_thread: int | None = None
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # TwiML fetches (only with fetch_twiml) run on threads.
        self._senders = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sandbox-twiml")
        self._local = threading.local()
        self._socket = socket.create_server((host, port), backlog=1024)
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.StreamWriter] = set()

    # -- lifecycle of the carrier itself ------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where the carrier listens, e.g. http://127.0.0.1:8055."""
        return f"http://{self._host}:{self._socket.getsockname()[1]}"

    def start(self) -> SandboxCarrier:
        """Serve and play lifecycles in a background thread (once: starting again is a no-op)."""
        if self._running:
            return self
        self._running = True
        threading.Thread(target=self._run_loop, daemon=True, name="sandbox").start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def _run_loop(self) -> None:
        try:
            self._loop.run_forever()
        finally:  # uvloop's loop keeps its descriptors until it is closed
            self._loop.close()

    def stop(self) -> None:
        """Stop serving and playing; pending callbacks are dropped."""
        with self._lock:
            running, self._running = self._running, False
        self._senders.shutdown(wait=False, cancel_futures=True)
        if not running:
            self._socket.close()
            if self._loop_thread is None:  # never started: its loop never ran
                self._loop.close()
            return
        with contextlib.suppress(RuntimeError):  # already closed
            asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout=10)

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
        """Counts of requests, calls by status, callbacks: ``callbacks_sent`` (answered 2xx),
        ``callbacks_failed`` (tries that failed, and ``callbacks_failed_<ct|rt|4xx|5xx>`` by
        what failed), ``callbacks_resent``, and ``callbacks_lost`` (given up)."""
        with self._lock:
            by_status = Counter(call["status"] for call in self._calls.values())
            return {
                **dict.fromkeys(CALLBACK_COUNTS, 0),
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
                if self._lifecycles == 0 and self._in_flight == 0:
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
            account = ACCOUNT_PATH.match(path)
            if account is not None and method == "GET":
                self._authenticate(account[1], authorization)
                return 200, self._account(account[1])
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

    @staticmethod
    def _account(account_sid: str) -> dict[str, Any]:
        """The account resource, as Twilio's REST API answers a read of it."""
        return {
            "sid": account_sid,
            "owner_account_sid": account_sid,
            "friendly_name": "Sandbox carrier",
            "status": "active",
            "type": "Full",
            "uri": f"{API_PREFIX}{account_sid}.json",
        }

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
            # Asynchronous detection: the call runs its TwiML at once, and the verdict is
            # posted to its own callback once detection ends.
            "async_amd": first.get("AsyncAmd", "").lower() == "true",
            "amd_callback": first.get("AsyncAmdStatusCallback"),
            "amd_seconds": rule.amd_seconds
            if rule.amd_seconds is not None
            else self.config.default_amd_seconds,
            # TwiML applied to the live call by an update, and the text of each <Say> spoken.
            "twiml_updates": [],
            "said": [],
            "timeout": int(first.get("Timeout") or 60),
            "time_limit": int(first.get("TimeLimit") or 14400),
            "sequence": 0,
            "callbacks_sent": [],
            # Callbacks given up after every try the URL's connection overrides allow.
            "callbacks_lost": [],
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
        if ring > call["timeout"]:
            # Like Twilio: a call that rings longer than the request's Timeout ends no-answer.
            ring, outcome = call["timeout"], "no-answer"
            call["outcome"] = outcome
        with self._lock:
            self._attempts[to] += 1
            self._calls[sid] = call
            self._order.append(sid)
            self._live += 1
            self._stats["max_live_calls"] = max(self._stats["max_live_calls"], self._live)
            self._lifecycles += 1
        self._start_task(lambda: self._play(sid, outcome, ring, talk))
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
        twiml = (form.get("Twiml") or [""])[0]
        if twiml:
            if call["status"] != "in-progress":
                raise _Reply(
                    400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
                )
            self._run_twiml(sid, twiml)
        elif wanted == "canceled" and call["status"] in ("queued", "initiated", "ringing"):
            self._finish(sid, "canceled", None)
        elif wanted == "completed" and call["status"] == "in-progress":
            talked = time.time() - (call["start_time"] or time.time())
            self._finish(sid, "completed", talked)
        elif wanted:
            raise _Reply(400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect."))
        return self._resource(call)

    def _run_twiml(self, sid: str, twiml: str) -> None:
        """Run TwiML on a live call as Twilio would for its verbs here: each ``<Say>`` takes
        ``say_seconds``, and ``<Hangup/>`` (or the end of the document) ends the call."""
        said = [html.unescape(text) for text in SAY.findall(twiml)]
        with self._lock:
            call = self._calls[sid]
            call["twiml_updates"].append(twiml)
            call["said"].extend(said)
            self._lifecycles += 1
            speaking = self.config.say_seconds * len(said)

        async def run() -> None:
            try:
                if speaking:
                    await asyncio.sleep(speaking)
                if self._running:
                    talked = time.time() - (call["start_time"] or time.time())
                    self._finish(sid, "completed", talked)
            finally:
                with self._lock:
                    self._lifecycles -= 1

        self._start_task(run)

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

    async def _play(self, sid: str, outcome: str, ring: float, talk: float) -> None:
        """One call's lifecycle, step after step (a step that fails is counted and skipped)."""
        steps: list[tuple[float, Callable[[], None]]] = [
            (0.0, lambda: self._progress(sid, "initiated", "initiated")),
            (0.0, lambda: self._progress(sid, "ringing", "ringing")),
        ]
        if outcome in ("completed", "voicemail"):
            steps.append((ring, lambda: self._answer(sid)))
            steps.append((talk, lambda: self._finish(sid, "completed", talk)))
        else:
            steps.append((ring, lambda: self._finish(sid, outcome, None)))
        try:
            for delay, step in steps:
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self._running:
                    return
                try:
                    step()
                except Exception as exc:  # a bad step must not stop every other call
                    with self._lock:
                        self._stats["event_errors"] += 1
                        self._stats[f"event_error:{exc.__class__.__name__}"] += 1
        finally:
            with self._lock:
                self._lifecycles -= 1

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

    def _verdict(self, call: dict[str, Any]) -> str | None:
        """What answering machine detection says of the call; None when it was not asked for
        (a voicemail is then just a completed call, as on Twilio). Waiting for the end of the
        greeting (DetectMessageEnd) reports how it ended; otherwise a machine is reported as
        soon as it starts (asynchronous detection) or after the greeting (synchronous)."""
        if not call["machine_detection"]:
            return None
        if call["outcome"] != "voicemail":
            return "human"
        if call["async_amd"] and call["machine_detection"] != "DetectMessageEnd":
            return "machine_start"
        return "machine_end_beep"

    def _answer(self, sid: str) -> None:
        with self._lock:
            verdict = self._verdict(self._calls[sid])
            detect_later = verdict is not None and self._calls[sid]["async_amd"]
        # Synchronous detection runs before the call is connected: the answer carries it.
        answered_by = None if detect_later else verdict
        call = self._set(sid, "in-progress", start_time=time.time(), answered_by=answered_by)
        if call is None:
            return
        if "answered" in call["events"]:
            self._callback(call)
        if self.config.fetch_twiml and call["url"]:
            self._track(lambda: self._fetch_twiml(sid))
        if detect_later and verdict is not None:
            with self._lock:
                self._lifecycles += 1
            self._start_task(lambda: self._detect(sid, verdict, call["amd_seconds"]))

    async def _detect(self, sid: str, verdict: str, seconds: float) -> None:
        """Asynchronous detection: the verdict, after ``seconds``, on the call and to its AMD
        callback (signed like the status callbacks), if the call is still up by then."""
        try:
            await asyncio.sleep(seconds)
            with self._lock:
                call = self._calls[sid]
                if call["status"] != "in-progress" or not self._running:
                    return
                call["answered_by"] = verdict
                url = call["amd_callback"]
                token = self.config.accounts.get(call["account_sid"], "")
                params = {
                    "AccountSid": call["account_sid"],
                    "CallSid": sid,
                    "AnsweredBy": verdict,
                    "MachineDetectionDuration": str(int(seconds * 1000)),
                }
            if url and not self.config.rule_for(call["to"]).drop_callbacks:
                self._post_in_order(call, lambda: self._post_callback(call, url, params, token))
        finally:
            with self._lock:
                self._lifecycles -= 1

    def _finish(self, sid: str, status: str, talked: float | None) -> None:
        duration = math.ceil(talked) if talked is not None else 0
        fields: dict[str, Any] = {"end_time": time.time(), "duration": duration}
        with self._lock:
            call = self._calls[sid]
            if call["start_time"] is not None and call["answered_by"] is None:
                # Detection still running at the end gives its verdict with the call's end.
                fields["answered_by"] = self._verdict(call)
        ended = self._set(sid, status, **fields)
        if ended is not None:
            # Twilio always sends the final status to a status callback.
            self._callback(ended)

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
            self._start_task(drain)

    def _start_task(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` on the loop (from any thread)."""
        if threading.get_ident() == self._loop_thread:
            self._create_task(work)
        else:
            self._loop.call_soon_threadsafe(self._create_task, work)

    def _create_task(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # The loop keeps only a weak reference to a task: hold it until it is done.
        task = self._loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_callback(
        self, call: dict[str, Any], url: str, params: dict[str, str], token: str
    ) -> None:
        """Post one callback, and resend it as Twilio would: as the connection overrides of
        the URL's fragment ask (Twilio's defaults without one), the fragment never sent."""
        if self.config.shuffle_callbacks:
            await asyncio.sleep(random.random() * 0.05)
        url, policy = CallbackPolicy.of_url(url)
        # Signed as Twilio signs it: the URL it posts to, without the fragment.
        signature = request_signature(token, url, params)
        body = urllib.parse.urlencode(params).encode()
        started = time.monotonic()
        deadline = started + policy.total_timeout_ms / 1000
        resend = 0
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            failure = await self._try_callback(
                url,
                body,
                signature,
                min(policy.connect_timeout_ms / 1000, left),
                min(policy.read_timeout_ms / 1000, left),
            )
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

    async def _try_callback(
        self, url: str, body: bytes, signature: str, connect_s: float, read_s: float
    ) -> str | None:
        """One try at posting a callback: None when it was answered 2xx, else what failed."""
        try:
            status = await self._post(url, body, signature, connect_s, read_s)
        except _NotConnected:
            return FAILURE_CONNECT
        except (TimeoutError, OSError, EOFError, ValueError):
            return FAILURE_READ  # connected, but no answer came
        if 200 <= status < 300:
            return None
        return FAILURE_5XX if status >= 500 else FAILURE_4XX

    async def _post(
        self, url: str, body: bytes, signature: str, connect_s: float, read_s: float
    ) -> int:
        """POST a signed form over a keep-alive connection to the URL's host, connecting within
        ``connect_s`` (else _NotConnected) and answered within ``read_s``; the status."""
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
                async with asyncio.timeout(read_s):
                    return await self._exchange(key, connection, request)
            except TimeoutError:
                raise  # no answer in time: this try failed
            except (OSError, EOFError, ValueError):
                connection[1].close()
        try:
            async with asyncio.timeout(connect_s):
                connection = await asyncio.open_connection(*key)
        except OSError as exc:  # refused, unreachable, or not connected in time
            raise _NotConnected(str(exc)) from exc
        async with asyncio.timeout(read_s):
            return await self._exchange(key, connection, request)

    async def _exchange(self, key: tuple[str, int], connection: _Connection, request: bytes) -> int:
        """One request and its response; the connection is kept for the next one unless the
        receiver closes it."""
        reader, writer = connection
        try:
            writer.write(request)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise EOFError("connection closed") from exc
            first, headers = _parse_head(head)
            status = int(first.split()[1])
            keep = headers.get("connection", "").lower() != "close"
            await _read_body(reader, headers)
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.setdefault(key, []).append(connection)
        else:
            writer.close()
        return status

    # -- serving the REST API ------------------------------------------------------------------

    async def _serve(self) -> None:
        self._loop_thread = threading.get_ident()
        self._server = await asyncio.start_server(self._connection, sock=self._socket)

    async def _shut_down(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in [*self._serving, *(w for kept in self._idle.values() for _, w in kept)]:
            writer.close()
        self._idle.clear()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=5)
        self._loop.call_soon(self._loop.stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: HTTP/1.1 requests, one after another, kept alive."""
        self._serving.add(writer)
        try:
            while self._running:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                received_at = time.time()  # a call's created_at: pacing is measured at the wire
                first, headers = _parse_head(head)
                method, target, version = first.split(" ", 2)
                raw = await _read_body(reader, headers)
                try:
                    status, payload = await self._answer_request(
                        method, target, raw, headers.get("authorization"), received_at
                    )
                except Exception as exc:  # a bug here answers 500, as a carrier's would
                    with self._lock:
                        self._stats[f"request_error:{exc.__class__.__name__}"] += 1
                    status, payload = 500, twilio_error(500, 20500, "Internal Server Error")
                body = json.dumps(payload).encode()
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                writer.write(
                    (
                        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        + ("" if keep else "Connection: close\r\n")
                        + "\r\n"
                    ).encode()
                    + body
                )
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self._serving.discard(writer)
            writer.close()

    async def _answer_request(
        self, method: str, target: str, raw: bytes, authorization: str | None, received_at: float
    ) -> tuple[int, Any]:
        parts = urllib.parse.urlsplit(target)
        if parts.path == "/sandbox/config":
            form = {"_json": [raw.decode() or "{}"]}
        else:
            form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        match = CALLS_PATH.match(parts.path)
        creating = method == "POST" and match is not None and match.group(2) is None
        rule = self.config.rule_for(form.get("To", [""])[0]) if creating else None
        if rule is not None and rule.api_latency_ms:
            await asyncio.sleep(rule.api_latency_ms / 1000)
        status, payload = self.handle(method, parts.path, query, form, authorization, received_at)
        if rule is not None and rule.timeout_seconds and status == 201:
            # The call is placed, but its answer comes too late for the client.
            await asyncio.sleep(rule.timeout_seconds)
        return status, payload

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
        signature = request_signature(token, url, params)
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


def _label(params: dict[str, str]) -> str:
    """How a sent or lost callback is listed: its call status, or ``amd:`` and the verdict."""
    return params.get("CallStatus") or f"amd:{params.get('AnsweredBy', '')}"


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """An HTTP/1.1 head's first line, and its headers by lower-case name."""
    first, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return first, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The body after a head: chunked, or as long as Content-Length says."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length = int(headers.get("content-length") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readline()).split(b";")[0], 16):
        body += await reader.readexactly(size)
        await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass  # trailers
    return bytes(body)
