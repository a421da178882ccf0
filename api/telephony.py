"""Endpoints the provider and the voice-agent runtime call: status callbacks, TwiML, config."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from api.deps import SessionDep
from api.status_batcher import batcher
from shared.callstate import REDUNDANT_TWILIO_STATUSES
from shared.errors import Forbidden
from shared.schemas import AgentConfigResponse
from shared.services import calls as calls_service
from shared.telephony.twilio import callback_is_authentic
from shared.urls import TWILIO_STATUS_PATH, agent_config_signature_valid, public_url

router = APIRouter(tags=["telephony"])

FORM_URLENCODED = "application/x-www-form-urlencoded"


async def _verified_twilio_form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith(FORM_URLENCODED):
        # What Twilio sends; parsed directly, as it comes several times per call.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    else:
        form = {k: str(v) for k, v in (await request.form()).items()}
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not callback_is_authentic(public_url(path), form, signature):
        raise Forbidden(["header", "X-Twilio-Signature"], "invalid Twilio signature")
    return form


async def twilio_status_callback(request: Request) -> Response:
    """A Twilio status event: verified, then handed to the status queue."""
    call_id: str = request.path_params["call_id"]
    form = await _verified_twilio_form(request)
    if form.get("CallStatus") in REDUNDANT_TWILIO_STATUSES:
        return Response(status_code=204)
    report = {
        "sid": form.get("CallSid", ""),
        "status": form.get("CallStatus", ""),
        "answered_by": form.get("AnsweredBy"),
        "duration": form.get("CallDuration") or None,
        "error_code": form.get("ErrorCode"),
        "error_message": form.get("ErrorMessage"),
        "from": form.get("From"),
    }
    # Answered once published with the callbacks that came at the same moment. If publishing
    # fails the request fails and Twilio retries; if the message is lost later, the tick
    # reconciles the call with Twilio once its final callback is overdue.
    await batcher().submit((call_id, report))
    return Response(status_code=204)


# Several requests per call: a plain route, as FastAPI's parameter solving cost about as much
# as the callback's own work, and it takes nothing but the request. Internal: not in the schema.
router.add_route(
    TWILIO_STATUS_PATH, twilio_status_callback, methods=["POST"], include_in_schema=False
)


@router.post("/v1/telephony/twilio/twiml/{call_id}")
async def twilio_twiml(call_id: str, request: Request) -> Response:
    """The TwiML the answered call runs: connect its audio to the voice-agent runtime."""
    await _verified_twilio_form(request)
    return Response(calls_service.twiml_for_call(call_id), media_type="application/xml")


@router.get(
    "/v1/voiceai/calls/{call_id}/agent-config",
    response_model=AgentConfigResponse,
)
def agent_config(
    call_id: str, expires: int, signature: str, session: SessionDep
) -> AgentConfigResponse:
    """The rendered prompt and settings of one call, for the voice-agent runtime (signed URL)."""
    if not agent_config_signature_valid(call_id, expires, signature):
        raise Forbidden(["query", "signature"], "invalid or expired signature")
    return calls_service.agent_config(session, call_id)
