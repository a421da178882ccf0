"""What the sandbox carrier says in Vobiz's words: the REST calls API as the official SDK
(``vobiz-python``) calls it (``/api/v1/Account/{auth_id}/Call/``, JSON, ``X-Auth-ID`` and
``X-Auth-Token``), and the forms Vobiz posts (ring and hang-up callbacks, the machine
detection result, the answer URL's fetch), signed with V3 signatures as the SDK verifies them.

A call placed here is the carrier's usual call (``sandbox.calls``: the same rules, outcomes and
lifecycle), marked ``"api": "vobiz"`` so that it speaks Vobiz (``sandbox.dialects``)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from vobiz.utils.signature_v3 import construct_post_url, get_signature_v3

from sandbox.twilio_api import FINAL, Reply

if TYPE_CHECKING:
    from sandbox.calls import Calls

NAME = "vobiz"
FORM = "application/x-www-form-urlencoded"
SPEAK = re.compile(r"<Speak[^>]*>(.*?)</Speak>", re.DOTALL)
PREFIX = "/api/v1/Account/{auth_id}/Call/"
# Our call states (Twilio's words, which the lifecycle uses) in Vobiz's.
WORDS = {
    "queued": "queued",
    "initiated": "queued",
    "ringing": "ringing",
    "in-progress": "in-progress",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "cancel",
}
# A final state's hang-up cause: (code, name, the SIP-like cause).
CAUSES = {
    "completed": (4000, "Normal Hangup", "NORMAL_CLEARING"),
    "busy": (3010, "Busy Line", "USER_BUSY"),
    "no-answer": (3020, "No Answer", "NO_ANSWER"),
    "failed": (2000, "Network Error", "NORMAL_TEMPORARY_FAILURE"),
    "canceled": (1000, "Canceled", "ORIGINATOR_CANCEL"),
}
LIVE = frozenset({"initiated", "ringing", "in-progress"})


def error_body(message: str) -> dict[str, Any]:
    """Vobiz's error body (the SDK reads its ``error``)."""
    return {"api_id": str(uuid.uuid4()), "error": message}


def _stamp(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def call_object(call: dict[str, Any]) -> dict[str, Any]:
    """A call (a copy read under the carrier's lock) as Vobiz's call object."""
    code, name, _ = CAUSES.get(call["status"], (None, None, None))
    final = call["status"] in FINAL
    return {
        "api_id": str(uuid.uuid4()),
        "call_uuid": call["sid"],
        "request_uuid": call["sid"],
        "call_status": WORDS.get(call["status"], call["status"]),
        "status": WORDS.get(call["status"], call["status"]),
        "call_direction": "outbound",
        "direction": "outbound",
        "from": call["from"],
        "to": call["to"],
        "from_number": call["from"],
        "to_number": call["to"],
        "created_at": _iso(call["created_at"]),
        "initiation_time": _stamp(call["created_at"]),
        "answer_time": _stamp(call["start_time"]) or None,
        "end_time": _stamp(call["end_time"]) or None,
        "call_duration": call["duration"] if final else None,
        "bill_duration": call["duration"] if final else None,
        "hangup_cause_code": code if final else None,
        "hangup_cause_name": name if final else None,
        "hangup_source": "Callee" if final else None,
    }


def _form(call: dict[str, Any], status: str, event: str) -> dict[str, str]:
    return {
        "CallUUID": call["sid"],
        "RequestUUID": call["sid"],
        "ALegUUID": call["sid"],
        "ALegRequestUUID": call["sid"],
        "From": call["from"],
        "To": call["to"],
        "Direction": "outbound",
        "CallStatus": status,
        "Event": event,
    }


def status_callback_form(call: dict[str, Any], timestamp: float) -> dict[str, str]:
    """The ring (``ringing``) or hang-up callback of the call as it is now."""
    if call["status"] not in FINAL:
        return _form(call, WORDS.get(call["status"], call["status"]), "Ring")
    params = _form(call, WORDS[call["status"]], "Hangup")
    code, name, cause = CAUSES[call["status"]]
    duration = str(call["duration"] or 0)
    params.update(
        Duration=duration,
        BillDuration=duration,
        StartTime=_stamp(call["created_at"]),
        AnswerTime=_stamp(call["start_time"]),
        EndTime=_stamp(timestamp),
        HangupCause=cause,
        HangupCauseName=name,
        HangupCauseCode=str(code),
        HangupSource="Callee",
    )
    if call["machine_detection"] and call["answered_by"]:
        params["Machine"] = "true" if call["answered_by"].startswith("machine") else "false"
    return params


def amd_callback_form(call: dict[str, Any], verdict: str, seconds: float) -> dict[str, str]:
    """The asynchronous machine detection's result (``Machine``: true or false)."""
    params = _form(call, "in-progress", "MachineDetection")
    params["Machine"] = "true" if verdict.startswith("machine") else "false"
    params["MachineDetectionDuration"] = str(int(seconds * 1000))
    return params


def answer_fetch_form(call: dict[str, Any]) -> dict[str, str]:
    """What Vobiz posts to the answer URL once the call is answered (its StartApp event)."""
    return _form(call, "in-progress", "StartApp")


def callback_url(call: dict[str, Any]) -> str | None:
    """Ringing goes to the ring URL, the end to the hang-up URL."""
    return call["status_callback"] if call["status"] in FINAL else call.get("ring_url")


def signature_headers(token: str, url: str, params: dict[str, str]) -> dict[str, str]:
    """``X-Vobiz-Signature-V3`` and its nonce, over the URL and the form, as the SDK's
    ``validate_v3_signature`` checks a POST."""
    nonce = "".join(secrets.choice("0123456789") for _ in range(20))
    base = construct_post_url(url, dict(params)).decode("utf-8")
    signature = get_signature_v3(token.encode(), base, nonce.encode()).decode()
    return {"X-Vobiz-Signature-V3": signature, "X-Vobiz-Signature-V3-Nonce": nonce}


def create_form(body: dict[str, Any]) -> dict[str, list[str]]:
    """A make-call request's JSON as the carrier's call form (Twilio's field names)."""

    def given(name: str) -> str:
        value = body.get(name)
        return "" if value is None else str(value)

    form = {
        "To": [given("to")],
        "From": [given("from")],
        "Url": [given("answer_url")],
        "StatusCallback": [given("hangup_url")],
        "StatusCallbackEvent": ["ringing", "completed"] if given("ring_url") else ["completed"],
        "Timeout": [given("ring_timeout") or "60"],
        "TimeLimit": [given("time_limit") or "14400"],
    }
    if given("machine_detection").lower() in ("true", "hangup"):
        form["MachineDetection"] = ["Enable"]
        if given("machine_detection_url"):
            form["AsyncAmd"] = ["true"]
            form["AsyncAmdStatusCallback"] = [given("machine_detection_url")]
    return form


Endpoint = Callable[[Request, str], Awaitable[tuple[int, Any]]]


def routes(calls: Calls) -> list[Route]:
    """The Vobiz calls API over the carrier's ``calls``."""

    def route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
        async def answer(request: Request) -> Response:
            try:
                auth_id = authenticate(request)
                status, body = await endpoint(request, auth_id)
            except Reply as reply:
                message = reply.body.get("message") if isinstance(reply.body, dict) else None
                status, body = reply.status, error_body(str(message or reply.body))
            except Exception as exc:  # a bug here answers 500, as Vobiz's would
                with calls.lock:
                    calls.stats[f"request_error:{exc.__class__.__name__}"] += 1
                status, body = 500, error_body("internal server error")
            if status == 204:
                return Response(status_code=204)
            return Response(json.dumps(body).encode(), status, media_type="application/json")

        return Route(path, answer, methods=methods)

    def authenticate(request: Request) -> str:
        auth_id = str(request.path_params["auth_id"])
        token = calls.config.accounts.get(auth_id)
        presented = (request.headers.get("x-auth-id"), request.headers.get("x-auth-token"))
        if token is None or presented != (auth_id, token):
            raise Reply(401, error_body("authentication failed"))
        return auth_id

    async def call_list(request: Request, auth_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            states = {"live": ("ringing", "in-progress"), "queued": ("queued", "initiated")}
            wanted = states.get(request.query_params.get("status") or "")
            if wanted is not None:  # the ids of the account's live (or queued) calls
                sids = [
                    r["sid"]
                    for r in calls.records()
                    if r["account_sid"] == auth_id and r["status"] in wanted
                ]
                return 200, {"api_id": str(uuid.uuid4()), "calls": sids}
            return 200, page(calls, auth_id, request)
        received_at = time.time()  # a call's created_at: pacing is measured at the wire
        body = json.loads((await request.body()).decode() or "{}")
        form = create_form(body)
        rule = calls.config.rule_for(form["To"][0])
        if rule.api_latency_ms:
            await asyncio.sleep(rule.api_latency_ms / 1000)
        if not form["Url"][0]:
            raise Reply(400, error_body("answer_url is required"))
        record = calls.find(auth_id, calls.create(auth_id, form, received_at)["sid"])
        # Marked before the handler yields to the loop, so before its lifecycle's first step.
        with calls.lock:
            record.update(api=NAME, ring_url=body.get("ring_url"))
        sid = record["sid"]
        if rule.timeout_seconds:
            await asyncio.sleep(rule.timeout_seconds)  # placed, but answered too late
        return 201, {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": sid}

    async def one_call(request: Request, auth_id: str) -> tuple[int, Any]:
        call = calls.find(auth_id, str(request.path_params["call_uuid"]))
        if request.method == "DELETE":
            with calls.lock:
                status = call["status"]
            if status not in LIVE and status != "queued":
                raise Reply(404, error_body("call not found or already ended"))
            ending = "completed" if status == "in-progress" else "canceled"
            calls.update(auth_id, call["sid"], {"Status": [ending]})
            return 204, None
        if request.method == "POST":
            return await transfer(request, auth_id, call)
        wanted = request.query_params.get("status")
        with calls.lock:
            record = dict(call)
        if wanted == "live" and record["status"] not in ("ringing", "in-progress"):
            raise Reply(404, error_body("no live call"))
        if wanted == "queued" and record["status"] not in ("queued", "initiated"):
            raise Reply(404, error_body("no queued call"))
        return 200, call_object(record)

    async def transfer(request: Request, auth_id: str, call: dict[str, Any]) -> tuple[int, Any]:
        """Vobiz's transfer of a live call to the XML at ``aleg_url``: fetched (signed, like
        every request of Vobiz's), and its ``<Speak>`` texts spoken before it hangs up (the
        carrier's TwiML runner plays them; the call's record lists them in ``said``)."""
        body = json.loads((await request.body()).decode() or "{}")
        with calls.lock:
            live = call["status"] == "in-progress"
            token = calls.config.accounts.get(auth_id, "")
            params = _form(call, "in-progress", "Transfer")
            timeout = calls.config.callback_timeout_s
        if not live:
            raise Reply(400, error_body("the call is not in progress"))
        url = str(body.get("aleg_url") or "")
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            response = await client.post(
                url,
                content=urllib.parse.urlencode(params).encode(),
                headers={"Content-Type": FORM, **signature_headers(token, url, params)},
                timeout=timeout,
            )
        if response.status_code != 200:
            raise Reply(400, error_body(f"aleg_url answered {response.status_code}"))
        spoken = "".join(f"<Say>{text}</Say>" for text in SPEAK.findall(response.text))
        calls.update(auth_id, call["sid"], {"Twiml": [f"<Response>{spoken}<Hangup/></Response>"]})
        return 202, {"api_id": str(uuid.uuid4()), "message": "call transferred"}

    return [
        route(PREFIX, call_list, ["GET", "POST"]),
        route(PREFIX + "{call_uuid}/", one_call, ["GET", "POST", "DELETE"]),
    ]


def page(calls: Calls, auth_id: str, request: Request) -> dict[str, Any]:
    """The account's calls, newest first (``limit``, at most 100, from ``offset``)."""
    limit = min(int(request.query_params.get("limit") or 20), 100)
    offset = int(request.query_params.get("offset") or 0)
    records = [r for r in reversed(calls.records()) if r["account_sid"] == auth_id]
    chunk = records[offset : offset + limit]
    more = len(records) > offset + limit
    return {
        "api_id": str(uuid.uuid4()),
        "meta": {
            "limit": limit,
            "offset": offset,
            "total_count": len(records),
            "previous": None,
            "next": f"?limit={limit}&offset={offset + limit}" if more else None,
        },
        "objects": [call_object(record) for record in chunk],
    }
