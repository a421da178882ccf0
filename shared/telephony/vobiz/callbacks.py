"""Vobiz's callbacks: their signature, and their form fields in our terms.

Vobiz posts forms: the ring and hang-up events of a call (``CallUUID``, ``CallStatus``,
``Event``, ``From``, ``To``, ``Duration``, ``AnswerTime``, ``HangupCauseName``, ...), the
asynchronous machine-detection result (``CallUUID``, ``Machine``: ``true`` or ``false``), and
the request for the answer URL's VobizXML once the call is answered (``CallStatus``
``in-progress``), which is also Vobiz's only word that the call was answered. Each is signed
with the account's auth token in ``X-Vobiz-Signature-V3``, over a nonce sent in
``X-Vobiz-Signature-V3-Nonce``: checked with the SDK's ``validate_v3_signature``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from shared import connections
from shared.connections import ConnectionUnavailable
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus
from shared.settings import Settings, get_settings
from shared.telephony.port import DetectionVerdict
from shared.telephony.vobiz import urls
from shared.telephony.vobiz.client import VobizAccount, account_for, connection_account
from shared.telephony.vobiz.statuses import from_vobiz, machine_verdict, was_answered
from shared.telephony.vobiz.xml import XML_MEDIA_TYPE, connect_to_agent, speak_and_hang_up

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vobiz-Signature-V3"
NONCE_HEADER = "X-Vobiz-Signature-V3-Nonce"
_SIGNATURE_KEY = SIGNATURE_HEADER.lower()
_NONCE_KEY = NONCE_HEADER.lower()


def callback_accounts(url: str, settings: Settings | None = None) -> list[VobizAccount]:
    """The accounts a callback to ``url`` may come from: the one its ``account`` query names
    (a provider connection's; two workspaces may hold the same account), else the
    environment's; none for an account we do not have (nor, in production, for the
    environment's when none is set)."""
    settings = settings or get_settings()
    try:
        default: VobizAccount | None = account_for(settings)
    except ConnectionUnavailable:  # production without an environment account
        default = None
    named = parse_qs(urlsplit(url).query).get(urls.ACCOUNT_PARAMETER)
    if not named:
        return [] if default is None else [default]
    if default is not None and named[0] == default.auth_id:
        return [default]
    return [
        connection_account(connection, settings)
        for connection in connections.by_account(urls.NAME, named[0])
    ]


def signed_by_vobiz(
    url: str,
    params: Mapping[str, str],
    signature: str,
    nonce: str,
    settings: Settings | None = None,
) -> bool:
    """Whether the V3 ``signature`` over ``nonce`` proves the callback to our public ``url``
    came from the Vobiz account it names: the SDK's signature of the URL and the form, or, as
    Vobiz's documentation describes its V3 signature, of the URL alone (the form then is not
    covered: a callback that changes nothing when replayed is all it can move)."""
    if not signature or not nonce:
        return False
    from vobiz.utils.signature_v3 import validate_v3_signature  # the SDK, at first use

    form = dict(params)
    for account in callback_accounts(url, settings):
        if not account.auth_token:
            continue
        for signed in (form, {}):
            if validate_v3_signature("POST", url, nonce, account.auth_token, signature, signed):
                return True
    return False


def status_update(params: Mapping[str, str]) -> ProviderUpdate | None:
    """A ring or hang-up callback's form in our terms; None for a status we do not know."""
    status = params.get("CallStatus", "")
    update = from_vobiz(
        params.get("CallUUID") or params.get("RequestUUID") or "",
        status,
        answered=was_answered(params.get("AnswerTime"), params.get("Duration")),
        hangup_cause=params.get("HangupCauseName") or params.get("HangupCause"),
        answered_by=machine_verdict(params.get("Machine")),
        duration=params.get("Duration") or None,
        from_number=params.get("From"),
    )
    if update is None:
        log.info("ignoring Vobiz status %r of call %s", status, params.get("CallUUID"))
    return update


def detection_verdict(params: Mapping[str, str]) -> DetectionVerdict:
    """An asynchronous machine-detection callback's form in our terms."""
    return DetectionVerdict(
        sid=params.get("CallUUID") or params.get("RequestUUID") or "",
        answered_by=machine_verdict(params.get("Machine")) or "unknown",
    )


def answer_update(params: Mapping[str, str]) -> ProviderUpdate | None:
    """The answer URL's request in our terms: the call answered (``in_progress``)."""
    update = status_update({**params, "CallStatus": params.get("CallStatus") or "in-progress"})
    return update if update is not None and update.status == CallStatus.IN_PROGRESS else None


class VobizCallbacks:
    """Vobiz's side of the callback endpoints (``port.Callbacks``; ``port.AnswerReports``: the
    answer URL's request reports the call answered; ``port.MessageDocuments``: a call a machine
    answered is transferred to the voicemail message)."""

    name = urls.NAME
    signature_header = SIGNATURE_HEADER
    answer_endpoint = urls.ANSWER
    answer_document_name = "VobizXML"

    def verify(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """Whether ``X-Vobiz-Signature-V3`` signs the callback (``signed_by_vobiz``)."""
        return signed_by_vobiz(
            url, params, headers.get(_SIGNATURE_KEY, ""), headers.get(_NONCE_KEY, "")
        )

    def status_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """``status_update``."""
        return status_update(params)

    def detection_verdict(self, params: Mapping[str, str]) -> DetectionVerdict:
        """``detection_verdict``."""
        return detection_verdict(params)

    def answer_document(self, call_id: str) -> tuple[str, str]:
        """VobizXML: stream the call's audio to the voice-agent runtime."""
        return XML_MEDIA_TYPE, connect_to_agent(call_id)

    def answer_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """``answer_update``."""
        return answer_update(params)

    def message_document(self, message: str) -> tuple[str, str]:
        """VobizXML: speak the voicemail message, then hang up."""
        return XML_MEDIA_TYPE, speak_and_hang_up(message)


CALLBACKS = VobizCallbacks()
