"""The sandbox carrier's HTTP routes (Starlette): Twilio's REST calls API for an account (and
Vobiz's, ``sandbox.vobiz_api``), and the carrier's own ``/sandbox/*`` control endpoints. Every
answer is JSON; an error is Twilio's error body, a bug in a route a 500 in the same shape (the
carrier goes on serving)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import sip, vobiz_api
from sandbox.calls import Calls
from sandbox.config import SandboxConfig
from sandbox.twilio_api import (
    API_PREFIX,
    Reply,
    account_resource,
    not_found,
    twilio_error,
)

Endpoint = Callable[[Request], Awaitable[tuple[int, Any]]]
BOTH = ["GET", "POST"]


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body).encode(), status, media_type="application/json")


def build_app(calls: Calls) -> Starlette:
    """The routes over ``calls``."""

    def route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
        async def answer(request: Request) -> Response:
            try:
                return _json(*await endpoint(request))
            except Reply as reply:
                return _json(reply.status, reply.body)
            except Exception as exc:  # a bug here answers 500, as a carrier's would
                with calls.lock:
                    calls.stats[f"request_error:{exc.__class__.__name__}"] += 1
                return _json(500, twilio_error(500, 20500, "Internal Server Error"))

        return Route(path, answer, methods=methods)

    def authenticate(request: Request) -> str:
        """The account of the path, whose credentials the request must present."""
        account_sid = str(request.path_params["account_sid"])
        token = calls.config.accounts.get(account_sid)
        authorization = request.headers.get("authorization", "")
        presented = None
        if authorization.startswith("Basic "):
            try:
                presented = base64.b64decode(authorization[6:]).decode().split(":", 1)
            except (ValueError, binascii.Error):
                presented = None
        if token is None or presented != [account_sid, token]:
            raise Reply(401, twilio_error(401, 20003, "Authenticate"))
        return account_sid

    async def form(request: Request) -> dict[str, list[str]]:
        return urllib.parse.parse_qs((await request.body()).decode(), keep_blank_values=True)

    def query(request: Request) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(request.url.query, keep_blank_values=True)

    async def account(request: Request) -> tuple[int, Any]:
        return 200, account_resource(authenticate(request))

    async def call_list(request: Request) -> tuple[int, Any]:
        account_sid = authenticate(request)
        if request.method == "GET":
            return 200, calls.page(account_sid, request.url.path, query(request))
        received_at = time.time()  # a call's created_at: pacing is measured at the wire
        fields = await form(request)
        rule = calls.config.rule_for(sip.dialed_number(fields.get("To", [""])[0]))
        if rule.api_latency_ms:
            await asyncio.sleep(rule.api_latency_ms / 1000)
        created = calls.create(account_sid, fields, received_at)
        if rule.timeout_seconds:
            # The call is placed, but its answer comes too late for the client.
            await asyncio.sleep(rule.timeout_seconds)
        return 201, created

    async def call(request: Request) -> tuple[int, Any]:
        account_sid = authenticate(request)
        sid = str(request.path_params["call_sid"])
        if request.method == "GET":
            return 200, calls.resource(calls.find(account_sid, sid))
        return 200, calls.update(account_sid, sid, await form(request))

    async def records(request: Request) -> tuple[int, Any]:
        return 200, calls.records()

    async def stats(request: Request) -> tuple[int, Any]:
        return 200, calls.counts()

    async def reset(request: Request) -> tuple[int, Any]:
        calls.reset()
        return 200, {"reset": True}

    async def configure(request: Request) -> tuple[int, Any]:
        config = SandboxConfig.from_dict(json.loads((await request.body()).decode() or "{}"))
        with calls.lock:
            calls.config = config
        return 200, {"configured": True}

    async def missing(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return _json(405, twilio_error(405, 20004, "Method not allowed"))
        if request.url.path.startswith("/sandbox/"):
            return _json(404, twilio_error(404, 20404, "unknown sandbox endpoint"))
        reply = not_found(request.url.path)
        return _json(reply.status, reply.body)

    calls_path = API_PREFIX + "{account_sid}/Calls"
    return Starlette(
        routes=[
            route(calls_path + ".json", call_list, BOTH),
            route(calls_path + "/{call_sid}.json", call, BOTH),
            route(API_PREFIX + "{account_sid}.json", account, ["GET"]),
            route("/sandbox/calls", records, BOTH),
            route("/sandbox/stats", stats, BOTH),
            route("/sandbox/reset", reset, ["POST"]),
            route("/sandbox/config", configure, ["POST"]),
            *vobiz_api.routes(calls),
        ],
        exception_handlers={404: missing, 405: missing},
    )
