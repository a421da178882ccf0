"""Endpoints the provider and the voice-agent runtime call: status callbacks, TwiML, config."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import SessionDep
from api.responses import FORBIDDEN, error_responses
from api.status_batcher import batcher
from shared.errors import ErrorItem, Forbidden, SwitchboardError
from shared.schemas import AgentConfigResponse
from shared.services import calls as calls_service
from shared.telephony.twilio import REDUNDANT_TWILIO_STATUSES, callback_is_authentic
from shared.urls import (
    TWILIO_AMD_PATH,
    TWILIO_STATUS_PATH,
    agent_config_signature_valid,
    public_url,
    twilio_callback_fragment,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["telephony"])

FORM_URLENCODED = "application/x-www-form-urlencoded"
FORM_BYTES = FORM_URLENCODED.encode()


def _check_signature(path: str, query: str, form: dict[str, str], signature: str) -> None:
    """Raises Forbidden unless ``X-Twilio-Signature`` signs this request's public URL and form:
    the URL as received, or with the connection-override fragment we give Twilio appended (a
    fragment is never sent in a request, and whether Twilio signs it is not documented)."""
    url = public_url(path + (f"?{query}" if query else ""))
    if not signature or not (
        callback_is_authentic(url, form, signature) or _signed_with_fragment(url, form, signature)
    ):
        raise Forbidden(["header", "X-Twilio-Signature"], "invalid Twilio signature")


def _signed_with_fragment(url: str, form: dict[str, str], signature: str) -> bool:
    fragment = twilio_callback_fragment()
    return bool(fragment) and callback_is_authentic(url + fragment, form, signature)


async def _verified_twilio_form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith(FORM_URLENCODED):
        # What Twilio sends; parsed directly, as it comes several times per call.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    else:
        form = {k: str(v) for k, v in (await request.form()).items()}
    _check_signature(
        request.url.path, request.url.query, form, request.headers.get("x-twilio-signature", "")
    )
    return form


def _status_report(form: dict[str, str]) -> dict[str, Any] | None:
    """The report a status callback queues; None for a status that needs no work."""
    if form.get("CallStatus") in REDUNDANT_TWILIO_STATUSES:
        return None
    return {
        "sid": form.get("CallSid", ""),
        "status": form.get("CallStatus", ""),
        "answered_by": form.get("AnsweredBy"),
        "duration": form.get("CallDuration") or None,
        "error_code": form.get("ErrorCode"),
        "error_message": form.get("ErrorMessage"),
        "from": form.get("From"),
    }


async def twilio_status_callback(request: Request) -> Response:
    """A Twilio status event that is not form-urlencoded (``StatusCallbacks`` takes the rest):
    verified, then stored and handed to the status queue."""
    report = _status_report(await _verified_twilio_form(request))
    if report is not None:
        await batcher().submit((request.path_params["call_id"], report))
    return Response(status_code=204)


# Internal: not in the schema.
router.add_route(
    TWILIO_STATUS_PATH, twilio_status_callback, methods=["POST"], include_in_schema=False
)


async def twilio_amd_callback(request: Request) -> Response:
    """Twilio's answering machine detection verdict on a call (AsyncAmd): verified like a
    status callback, then stored and handed to the status queue the same way; a worker records
    it and, for a machine, does what the call's voicemail behaviour says."""
    form = await _verified_twilio_form(request)
    report = {
        "event": calls_service.MACHINE_VERDICT_EVENT,
        "sid": form.get("CallSid", ""),
        "answered_by": form.get("AnsweredBy", ""),
        "detection_ms": form.get("MachineDetectionDuration") or None,
    }
    await batcher().submit((request.path_params["call_id"], report))
    return Response(status_code=204)


# Internal: not in the schema.
router.add_route(TWILIO_AMD_PATH, twilio_amd_callback, methods=["POST"], include_in_schema=False)

STATUS_PATH = re.compile(
    "^" + re.escape(TWILIO_STATUS_PATH).replace(re.escape("{call_id}"), "(?P<call_id>[^/]+)") + "$"
)
STATUS_BODY_MAX_BYTES = 64 * 1024


class StatusCallbacks:
    """Plain ASGI in front of the application, for the provider's form-urlencoded status
    callbacks: several per call, they are most of the API's requests, and going through the
    framework's middleware and routing cost more than their own work. Everything else, and a
    callback in any other encoding, goes on to the application.

    Answers as the route would: 204 once the report is stored (or needs no work), 403 with
    the usual error detail for a bad signature, 413 for a body no callback has.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            STATUS_PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        headers = dict(scope["headers"]) if match else {}
        if match is None or not headers.get(b"content-type", b"").startswith(FORM_BYTES):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > STATUS_BODY_MAX_BYTES:
                too_large = ErrorItem(loc=["body"], msg="the body is too large", type="too_large")
                await _answer(scope, receive, send, 413, SwitchboardError(items=[too_large]))
                return
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        try:
            _check_signature(
                scope["path"],
                scope.get("query_string", b"").decode(),
                form,
                headers.get(b"x-twilio-signature", b"").decode("latin-1"),
            )
        except Forbidden as error:
            await _answer(scope, receive, send, error.status_code, error)
            return
        report = _status_report(form)
        if report is not None:
            try:
                await batcher().submit((match.group("call_id"), report))
            except Exception:  # not acknowledged: the provider sends the callback again
                log.exception("storing a status callback failed")
                await _answer(scope, receive, send, 500)
                return
        await _answer(scope, receive, send, 204)


async def _answer(
    scope: Scope, receive: Receive, send: Send, status: int, error: SwitchboardError | None = None
) -> None:
    """An empty answer, or the error's usual body."""
    response = (
        Response(status_code=status)
        if error is None
        else JSONResponse({"detail": error.detail()}, status_code=status)
    )
    await response(scope, receive, send)


@router.post(
    "/v1/telephony/twilio/twiml/{call_id}", responses={**FORBIDDEN, **error_responses(413, 422)}
)
async def twilio_twiml(call_id: str, request: Request) -> Response:
    """The TwiML the answered call runs: connect its audio to the voice-agent runtime."""
    await _verified_twilio_form(request)
    return Response(calls_service.twiml_for_call(call_id), media_type="application/xml")


@router.get(
    "/v1/voiceai/calls/{call_id}/agent-config",
    response_model=AgentConfigResponse,
    responses=FORBIDDEN,
)
def agent_config(
    call_id: str, expires: int, signature: str, session: SessionDep
) -> AgentConfigResponse:
    """The rendered prompt and settings of one call, for the voice-agent runtime (signed URL)."""
    if not agent_config_signature_valid(call_id, expires, signature):
        raise Forbidden(["query", "signature"], "invalid or expired signature")
    return calls_service.agent_config(session, call_id)
