"""Twilio's callbacks: their signature, and their form fields in our terms.

Twilio posts a form: a status callback (``CallSid``, ``CallStatus``, ``CallDuration``,
``AnsweredBy``, ``ErrorCode``, ``ErrorMessage``, ``From``, ``AccountSid``), and with
asynchronous answering machine detection a verdict (``CallSid``, ``AnsweredBy``,
``MachineDetectionDuration``). Each is signed in ``X-Twilio-Signature``.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from shared import connections
from shared.lifecycle.plans import ProviderUpdate
from shared.settings import Settings, get_settings
from shared.telephony.port import DetectionVerdict
from shared.telephony.twilio import urls
from shared.telephony.twilio.client import TwilioAccount, account_for, connection_account
from shared.telephony.twilio.statuses import REDUNDANT_TWILIO_STATUSES, answered_by, from_twilio
from shared.telephony.twilio.twiml import TWIML_MEDIA_TYPE, connect_to_agent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
_SIGNATURE_KEY = SIGNATURE_HEADER.lower()


def request_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a form posted to ``url``: Twilio's scheme (base64 of an
    HMAC-SHA1 under the auth token, of the URL followed by every field's name and value in
    name order), as the SDK's ``RequestValidator.compute_signature`` computes it for a form of
    single values, without its per-field lookups: it comes several times per call."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.digest(auth_token.encode(), payload.encode(), "sha1")
    return base64.b64encode(digest).decode()


def callback_accounts(
    params: Mapping[str, str], settings: Settings | None = None
) -> list[TwilioAccount]:
    """The accounts a callback may come from: the one its ``AccountSid`` names, the
    environment's or a provider connection's (two workspaces may hold the same account);
    none for an account we do not have. A callback without ``AccountSid`` is the
    environment's account's."""
    settings = settings or get_settings()
    default = account_for(settings)
    account_sid = params.get("AccountSid")
    if account_sid is None or account_sid == default.account_sid:
        return [default]
    return [
        connection_account(connection, settings)
        for connection in connections.by_account(urls.NAME, account_sid)
    ]


def callback_is_authentic(
    url: str, params: Mapping[str, str], signature: str, settings: Settings | None = None
) -> bool:
    """Whether ``X-Twilio-Signature`` proves the callback came from the Twilio account it
    names, signed with that account's auth token."""
    for account in callback_accounts(params, settings):
        # Twilio signs the URL as it was given; the SDK's validate() also tries it with and
        # without an explicit port, two signatures more, which only a URL rewritten on the way
        # needs.
        expected = request_signature(account.auth_token, url, params)
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return True
        if RequestValidator(account.auth_token).validate(url, dict(params), signature):
            return True
    return False


def signed_by_twilio(
    url: str, params: Mapping[str, str], signature: str, settings: Settings | None = None
) -> bool:
    """Whether ``signature`` signs the callback to ``url``: the URL as received, or with the
    connection-override fragment we give Twilio appended (a fragment is never sent in a
    request, and whether Twilio signs it is not documented)."""
    if not signature:
        return False
    if callback_is_authentic(url, params, signature, settings):
        return True
    fragment = urls.callback_fragment(settings)
    return bool(fragment) and callback_is_authentic(url + fragment, params, signature, settings)


def status_update(params: Mapping[str, str]) -> ProviderUpdate | None:
    """A status callback's form in our terms; None for a status that needs no work (one that
    never tells more than another report of the call, or one we do not know)."""
    status = params.get("CallStatus", "")
    if status in REDUNDANT_TWILIO_STATUSES:
        return None
    update = from_twilio(
        params.get("CallSid", ""),
        status,
        answered_by=params.get("AnsweredBy"),
        duration=params.get("CallDuration") or None,
        error_code=params.get("ErrorCode"),
        error_message=params.get("ErrorMessage"),
        from_number=params.get("From"),
    )
    if update is None:
        log.info("ignoring Twilio status %r of call %s", status, params.get("CallSid"))
    return update


def detection_verdict(params: Mapping[str, str]) -> DetectionVerdict:
    """An answering machine detection callback's form (AsyncAmd) in our terms."""
    duration = params.get("MachineDetectionDuration") or ""
    return DetectionVerdict(
        sid=params.get("CallSid", ""),
        answered_by=answered_by(params.get("AnsweredBy")) or "",
        detection_ms=int(duration) if duration.isdigit() else None,
    )


class TwilioCallbacks:
    """Twilio's side of the callback endpoints (``port.Callbacks``)."""

    name = urls.NAME
    signature_header = SIGNATURE_HEADER
    answer_endpoint = urls.TWIML
    answer_document_name = "TwiML"

    def verify(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """Whether ``X-Twilio-Signature`` signs the callback (``signed_by_twilio``)."""
        return signed_by_twilio(url, params, headers.get(_SIGNATURE_KEY, ""))

    def status_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """``status_update``."""
        return status_update(params)

    def detection_verdict(self, params: Mapping[str, str]) -> DetectionVerdict:
        """``detection_verdict``."""
        return detection_verdict(params)

    def answer_document(self, call_id: str) -> tuple[str, str]:
        """TwiML: stream the call's audio to the voice-agent runtime."""
        return TWIML_MEDIA_TYPE, connect_to_agent(call_id)


CALLBACKS = TwilioCallbacks()
