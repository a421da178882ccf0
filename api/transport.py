"""The transport's guard, in front of routing and parsing: body-size limits, the API key's
presence, and a last answer for an unhandled error.

The framework reads a JSON or multipart body in full before a route's dependencies (the API
key among them) run, so a body is refused here first, on its headers when they decide it:
without any API key header a request with a body to an authenticated route is a 401; a
``Content-Length`` over the route's limit is a 413. A chunked body, or one longer than it
said, is counted while it streams and refused with a 413 once it passes the limit. A refused
body is never read: the answer closes the connection.

The provider's form-urlencoded status callbacks never come here (``telephony.StatusCallbacks``
answers them in front of the application, with a limit of its own).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.telephony import STATUS_BODY_MAX_BYTES
from shared.batches.csv import MAX_CSV_BYTES
from shared.db import transaction
from shared.errors import ErrorItem, SwitchboardError, Unauthorized
from shared.workspaces.service import authenticate

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# A 10,000-recipient submit with seven dynamic variables each is 3.5 MB of JSON: the limit
# leaves room for longer variables and per-recipient overrides (about 1.6 KB a recipient).
BATCH_BODY_MAX_BYTES = 16 * MIB
UPLOAD_BODY_MAX_BYTES = MAX_CSV_BYTES + 64 * 1024  # the file, the form fields and boundaries
DNC_IMPORT_MAX_BYTES = 4 * MIB  # 100,000 numbers
PROVIDER_BODY_MAX_BYTES = STATUS_BODY_MAX_BYTES  # a provider's form: a few hundred bytes
DEFAULT_BODY_MAX_BYTES = 1 * MIB

# Routes that authenticate with the API key live under these prefixes; the signed agent-config
# URL under /v1/voiceai/calls/ does not, and has no body.
AUTHENTICATED_PREFIXES = (
    "/v1/voiceai/",
    "/v1/convai/",
    "/v1/provider-connections",
    "/ai/",
    "/dashboard/data",
)
UNAUTHENTICATED_PREFIXES = ("/v1/voiceai/calls/",)
PROVIDER_PREFIX = "/v1/telephony/"
KEY_HEADERS = frozenset((b"x-api-key", b"xi-api-key", b"authorization"))
# A body that may be larger than this (declared so, or not declared at all) is read only for a
# key that exists: a made-up key must not buy the route's whole limit of buffering. Smaller
# bodies are left to the route's own check. Keys found are remembered for a while, so a
# client's large uploads cost one lookup; the route still checks the key on every request.
KEY_CHECK_ABOVE_BYTES = 64 * 1024
KNOWN_KEY_TTL_S = 60.0
KNOWN_KEYS_MAX = 1024


@dataclass(frozen=True)
class BodyRule:
    """What a path's request body may be."""

    max_bytes: int
    needs_key: bool


def body_rule(path: str) -> BodyRule:
    """The body limit of the route at ``path``, and whether a body needs an API key header."""
    if path.startswith(PROVIDER_PREFIX):
        return BodyRule(PROVIDER_BODY_MAX_BYTES, needs_key=False)
    needs_key = path.startswith(AUTHENTICATED_PREFIXES) and not path.startswith(
        UNAUTHENTICATED_PREFIXES
    )
    if path.endswith("/batch-calling/submit") or path == "/ai/phone-calls/action/call-bulk":
        return BodyRule(BATCH_BODY_MAX_BYTES, needs_key)
    if path.endswith("/batch-calling/submit-csv"):
        return BodyRule(UPLOAD_BODY_MAX_BYTES, needs_key)
    if path.endswith("/dnc/import"):
        return BodyRule(DNC_IMPORT_MAX_BYTES, needs_key)
    return BodyRule(DEFAULT_BODY_MAX_BYTES, needs_key)


def _error_body(items: list[ErrorItem]) -> bytes:
    return json.dumps({"detail": [item.as_dict() for item in items]}).encode()


def _too_large(loc: list[str], max_bytes: int) -> list[ErrorItem]:
    return [ErrorItem(loc, f"the body is larger than {max_bytes} bytes", "too_large")]


INTERNAL_ERROR = _error_body([ErrorItem([], "internal server error", "internal_error")])


async def _answer(send: Send, status: int, body: bytes, close: bool) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:  # the rest of the request body is never read
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TransportGuard:
    """Plain ASGI middleware: cheap checks on the headers, a counter on ``receive``, and the
    500 for an error nothing else handled (answered in the seeds' shape, logged with its
    traceback, and the connection kept when the answer was complete)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._known_keys = _KnownKeys()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        has_body = has_key = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                has_body = has_body or declared != 0
            elif name == b"transfer-encoding":
                has_body = True
            elif name in KEY_HEADERS and value:
                has_key = True
        if not has_body:
            await _Exchange(scope, receive, send).run(self.app)
            return
        rule = body_rule(scope["path"])
        if rule.needs_key and not has_key:
            items = Unauthorized("missing API key: send it in the x-api-key header").items
            await _answer(send, 401, _error_body(items), close=True)
            return
        if declared is not None and declared > rule.max_bytes:
            body = _error_body(_too_large(["header", "Content-Length"], rule.max_bytes))
            await _answer(send, 413, body, close=True)
            return
        if rule.needs_key and (declared is None or declared > KEY_CHECK_ABOVE_BYTES):
            refusal = await self._known_keys.refusal(presented_key(scope["headers"]))
            if refusal is not None:
                await _answer(send, 401, _error_body(refusal.items), close=True)
                return
        await _Exchange(scope, receive, send, rule.max_bytes).run(self.app)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request sends (x-api-key, then xi-api-key, then a bearer token), as the
    route's security schemes read it."""
    found = dict((name, value) for name, value in headers if name in KEY_HEADERS)
    for name in (b"x-api-key", b"xi-api-key"):
        if found.get(name):
            return found[name].decode("latin-1")
    scheme, _, credentials = found.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class _KnownKeys:
    """Keys recently found in the database, by their text, until they expire."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def refusal(self, key: str | None) -> SwitchboardError | None:
        """The 401 for a key that does not exist, or None to read the body."""
        now = time.monotonic()
        if key is not None and self._until.get(key, 0.0) > now:
            return None
        try:
            await anyio.to_thread.run_sync(_authenticate, key)
        except Unauthorized as refused:
            return refused
        except Exception:
            # The database is away: the route answers for itself, as for any other request.
            log.warning("could not look up an API key before reading a body", exc_info=True)
            return None
        if len(self._until) >= KNOWN_KEYS_MAX:
            self._until = {k: t for k, t in self._until.items() if t > now}
            if len(self._until) >= KNOWN_KEYS_MAX:
                self._until.clear()
        assert key is not None
        self._until[key] = now + KNOWN_KEY_TTL_S
        return None


def _authenticate(key: str | None) -> None:
    with transaction() as session:
        authenticate(session, key)


class _Exchange:
    """One request and its answer, as the application sees them: the body counted against the
    limit while it is read, and what was sent of the answer."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, max_bytes: int | None = None
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.max_bytes = max_bytes
        self.received = 0
        self.started = self.complete = self.refused = False

    async def run(self, app: ASGIApp) -> None:
        receive = self._receive if self.max_bytes is None else self.counted_receive
        try:
            await app(self.scope, receive, self.tracked_send)
        except Exception:
            if self.refused:
                return  # the 413 went out; the application only saw the client leave
            log.exception(
                "unhandled error answering %s %s", self.scope["method"], self.scope["path"]
            )
            if not self.started:
                await _answer(self._send, 500, INTERNAL_ERROR, close=False)
            elif not self.complete:
                raise  # a truncated answer: the server closes the connection, as it must

    async def counted_receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.max_bytes is not None and self.received > self.max_bytes:
                if self.started:
                    raise BodyTooLarge(f"the body passed {self.max_bytes} bytes")
                self.refused = True
                body = _error_body(_too_large(["body"], self.max_bytes))
                await _answer(self._send, 413, body, close=True)
                # The application sees the client gone; whatever it answers is dropped.
                return {"type": "http.disconnect"}
        return message

    async def tracked_send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True
        await self._send(message)


class BodyTooLarge(Exception):
    """The body passed its limit after the answer had started: the connection is closed."""
