"""Endpoints the provider and the voice-agent runtime call: status callbacks, machine-detection
callbacks, the document an answered call runs, and the agent config.

Every provider registered in ``shared/telephony/registry.py`` gets its endpoints at
``/v1/telephony/{provider}/...``; the adapter verifies and reads each callback, and what is
queued is a provider-neutral report (``shared/telephony/reports.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import SessionDep
from api.responses import FORBIDDEN, error_responses
from api.status_batcher import batcher
from shared.dispatch import agent_config as calls_service
from shared.errors import ErrorItem, Forbidden, SwitchboardError
from shared.schemas import AgentConfigResponse
from shared.telephony import registry, reports
from shared.telephony.port import AnswerReports, Callbacks, MessageDocuments
from shared.urls import (
    MACHINE_DETECTION,
    MESSAGE,
    MESSAGE_TEXT,
    STATUS,
    agent_config_signature_valid,
    provider_path,
    public_url,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["telephony"])

FORM_URLENCODED = "application/x-www-form-urlencoded"
FORM_BYTES = FORM_URLENCODED.encode()


def _check_signature(
    callbacks: Callbacks,
    path: str,
    query: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
) -> None:
    """Raises Forbidden unless the provider's signature header signs this request's public URL
    and form (the adapter decides how, from the request's headers, keyed by lower-case name:
    a signature may come with a nonce of its own)."""
    url = public_url(path + (f"?{query}" if query else ""))
    header = callbacks.signature_header
    if not headers.get(header.lower()) or not callbacks.verify(url, form, headers):
        raise Forbidden(["header", header], f"invalid {callbacks.name.capitalize()} signature")


def _parse_form(body: bytes) -> dict[str, str]:
    """A form-urlencoded body, its blank fields kept: a provider signs them with the rest."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _verified_form(callbacks: Callbacks, request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith(FORM_URLENCODED):
        # What providers send; parsed directly, as it comes several times per call.
        form = _parse_form(await request.body())
    else:
        form = {k: str(v) for k, v in (await request.form()).items()}
    _check_signature(callbacks, request.url.path, request.url.query, form, request.headers)
    return form


def _status_report(callbacks: Callbacks, form: Mapping[str, str]) -> dict[str, Any] | None:
    """The report a status callback queues; None for one that needs no work."""
    update = callbacks.status_update(form)
    return None if update is None else reports.status_report(update)


def _provider_endpoints(callbacks: Callbacks) -> None:
    """Add the provider's callback endpoints to the router."""

    async def status_callback(request: Request) -> Response:
        """A status event that is not form-urlencoded (``StatusCallbacks`` takes the rest):
        verified, then stored and handed to the status queue."""
        report = _status_report(callbacks, await _verified_form(callbacks, request))
        if report is not None:
            await batcher().submit((request.path_params["call_id"], report))
        return Response(status_code=204)

    async def machine_detection_callback(request: Request) -> Response:
        """The answering machine detection verdict on a call: verified like a status callback,
        then stored and handed to the status queue the same way; a worker records it and, for
        a machine, does what the call's voicemail behaviour says."""
        verdict = callbacks.detection_verdict(await _verified_form(callbacks, request))
        await batcher().submit((request.path_params["call_id"], reports.verdict_report(verdict)))
        return Response(status_code=204)

    # What the provider's side does beyond the port's minimum, decided once.
    answers = callbacks if isinstance(callbacks, AnswerReports) else None
    documents = callbacks if isinstance(callbacks, MessageDocuments) else None

    async def answer_document(call_id: str, request: Request) -> Response:
        form = await _verified_form(callbacks, request)
        if answers is not None:
            # The provider's only word that the call was answered: stored like a status
            # callback before the document goes back (a failure answers 500, and the
            # provider asks again).
            update = answers.answer_update(form)
            if update is not None:
                await batcher().submit((call_id, reports.status_report(update)))
        media_type, body = callbacks.answer_document(call_id)
        return Response(body, media_type=media_type)

    async def message_document(request: Request) -> Response:
        """The document that speaks the query's text (``MESSAGE_TEXT``) on a live call, then
        ends it, for a provider that fetches it (``MessageDocuments``); the provider's
        signature covers the URL, and so the text."""
        await _verified_form(callbacks, request)
        assert documents is not None  # the route exists only then
        media_type, body = documents.message_document(request.query_params.get(MESSAGE_TEXT, ""))
        return Response(body, media_type=media_type)

    name = callbacks.name
    # Internal: not in the schema.
    internal = [(STATUS, status_callback), (MACHINE_DETECTION, machine_detection_callback)]
    if documents is not None:
        internal.insert(0, (MESSAGE, message_document))
    for endpoint, handler in internal:
        router.add_route(
            provider_path(name, endpoint), handler, methods=["POST"], include_in_schema=False
        )
    router.add_api_route(
        provider_path(name, callbacks.answer_endpoint),
        answer_document,
        methods=["POST"],
        name=f"{name}_{callbacks.answer_endpoint}",
        description=f"The {callbacks.answer_document_name} the answered call runs: connect its "
        "audio to the voice-agent runtime.",
        responses={**FORBIDDEN, **error_responses(413, 422)},
    )


for _name in registry.ADAPTERS:
    _provider_endpoints(registry.callbacks_for(_name))

STATUS_PATH = re.compile(
    "^"
    + re.escape(provider_path("{provider}", STATUS))
    .replace(re.escape("{provider}"), "(?P<provider>" + "|".join(registry.ADAPTERS) + ")")
    .replace(re.escape("{call_id}"), "(?P<call_id>[^/]+)")
    + "$"
)
STATUS_BODY_MAX_BYTES = 64 * 1024


class StatusCallbacks:
    """Plain ASGI in front of the application, for the providers' form-urlencoded status
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
        callbacks = registry.callbacks_for(match.group("provider"))
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
        form = _parse_form(bytes(body))
        try:
            _check_signature(
                callbacks,
                scope["path"],
                scope.get("query_string", b"").decode(),
                form,
                {
                    name.decode("latin-1"): value.decode("latin-1")
                    for name, value in headers.items()
                },
            )
        except Forbidden as error:
            await _answer(scope, receive, send, error.status_code, error)
            return
        report = _status_report(callbacks, form)
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
