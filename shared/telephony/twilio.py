"""Twilio, through the official SDK. With no credentials configured the client talks to the
sandbox carrier (``settings.sandbox_url``), a Twilio-compatible server on loopback."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from xml.sax.saxutils import escape as xml_escape

import certifi

# The SDK imports its REST resources (the account's call list among them) on first use. They
# are imported with this module instead: when a worker starts, before it is ready and its heap
# settles, not during its first dials, with every thread of the pool waiting on the import lock.
import twilio.rest.api.v2010.account.call  # noqa: F401
import urllib3
from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from shared import metrics
from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus, Outcome
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings, get_settings
from shared.telephony.base import DialRequest, PlacedCall
from shared.voicemail import MachineDetection, is_machine

log = logging.getLogger(__name__)

T = TypeVar("T")

AUTH_ERROR_CODES = {20003, 20005}
# Twilio's MachineDetection values for ours, and back (the setting for connect_agent calls).
MACHINE_DETECTION = {
    MachineDetection.ANSWERED_BY: "Enable",
    MachineDetection.MESSAGE_END: "DetectMessageEnd",
}
_DETECTION_SETTING = {value: ours for ours, value in MACHINE_DETECTION.items()}


def connect_agent_detection(settings: Settings | None = None) -> MachineDetection:
    """The detection calls that keep their agent on the line whatever answers are placed with:
    ``SWITCHBOARD_TWILIO_MACHINE_DETECTION`` (``Enable``, ``DetectMessageEnd``, or empty for
    none, which saves Twilio's per-call charge but no longer tells a voicemail apart)."""
    value = (settings or get_settings()).twilio_machine_detection.strip()
    return _DETECTION_SETTING.get(value, MachineDetection.OFF)


def _twiml_say_and_hang_up(message: str) -> str:
    """TwiML that speaks ``message`` (when there is one) and ends the call."""
    say = f"<Say>{xml_escape(message)}</Say>" if message.strip() else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{say}<Hangup/></Response>'


# Requests the provider did not process: safe to send again after a pause.
RETRY_PAUSES_S = (0.2, 0.5, 1.0)
TWILIO_API_BASE_URL = "https://api.twilio.com"


@dataclass(frozen=True)
class TwilioAccount:
    """Credentials of one Twilio account, and where its REST API lives."""

    account_sid: str
    auth_token: str
    api_base_url: str | None = None  # None: Twilio itself


def account_for(settings: Settings, credentials_ref: str = "default") -> TwilioAccount:
    """The account a caller number's ``credentials_ref`` names.

    Only the ``default`` account (from settings) exists so far; with no Twilio credentials
    configured it is the sandbox carrier's account.
    """
    del credentials_ref  # every number uses the default account until a secret store exists
    if settings.twilio_account_sid:
        return TwilioAccount(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_api_base_url or None,
        )
    return TwilioAccount(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, settings.sandbox_url)


def request_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a form posted to ``url``: Twilio's scheme (base64 of an
    HMAC-SHA1 under the auth token, of the URL followed by every field's name and value in
    name order), as the SDK's ``RequestValidator.compute_signature`` computes it for a form of
    single values, without its per-field lookups: it comes several times per call."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.digest(auth_token.encode(), payload.encode(), "sha1")
    return base64.b64encode(digest).decode()


def callback_is_authentic(
    url: str, params: Mapping[str, str], signature: str, settings: Settings | None = None
) -> bool:
    """Whether ``X-Twilio-Signature`` proves the callback came from our Twilio account."""
    account = account_for(settings or get_settings())
    if params.get("AccountSid") not in (None, account.account_sid):
        return False
    # Twilio signs the URL as it was given; the SDK's validate() also tries it with and without
    # an explicit port, two signatures more, which only a URL rewritten on the way needs.
    expected = request_signature(account.auth_token, url, params)
    if hmac.compare_digest(expected.encode(), signature.encode()):
        return True
    return bool(RequestValidator(account.auth_token).validate(url, dict(params), signature))


def _provider_error(exc: Exception) -> ProviderError:
    if isinstance(exc, FencePassed):
        return ProviderError(str(exc), retryable=True, fenced=True)
    if isinstance(exc, TwilioRestException):
        status = exc.status
        code = exc.code
        message = exc.msg if isinstance(exc.msg, str) else str(exc)
        return ProviderError(
            f"twilio {status}/{code}: {message}",
            status=status,
            code=code,
            retryable=status == 429 or status >= 500 or code == 20429,
            auth_failed=status == 401 or code in AUTH_ERROR_CODES,
        )
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        # Refused, unresolved or timed out while connecting (NewConnectionError is one of
        # these): the connection was never made, so the request was never sent.
        return ProviderError(f"twilio unreachable: {exc}", retryable=True)
    # Anything else after the request may have been sent: treat as ambiguous, never re-dial.
    return ProviderError(f"twilio request failed: {exc!r}", ambiguous=True)


class PooledHttpClient(HttpClient):
    """The SDK's HTTP client interface over one urllib3 pool shared by the process's threads.

    The SDK builds every request and reads every response as it always does; only the
    transport differs from its default ``requests`` session, which costs a dialing worker
    about as much CPU per request again as the request itself. Nothing is ever resent here
    (``_call`` decides that), and redirects are not followed.
    """

    def __init__(self, base_url: str, timeout: float, max_connections: int = 64) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        # The environment's proxy and CA bundle, read once (as requests would per request).
        parts = urllib.parse.urlsplit(base_url)
        proxy = None
        if not urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = urllib.request.getproxies().get(parts.scheme)
        ca_certs = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or certifi.where()
        )
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, maxsize=max_connections, ca_certs=ca_certs)
            if proxy
            else urllib3.PoolManager(maxsize=max_connections, ca_certs=ca_certs)
        )
        # Every request the SDK builds goes to the base URL's host: without a proxy, such a
        # request is handed straight to that host's connection pool, past the manager's URL
        # parsing and pool lookup (an eighth of the Python calls of a provider request).
        # Other URLs, and redirects, take the manager.
        self._origin = f"{parts.scheme}://{parts.netloc}"
        direct = not proxy and parts.scheme in ("http", "https") and bool(parts.hostname)
        self._origin_pool = self.pool.connection_from_url(self._origin) if direct else None
        # The calling thread's dial fence (``send_before``), set around a dial's requests.
        self.fence = threading.local()

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request; what the SDK's own client returns for it."""
        sent = dict(headers or {})
        if params:
            uri += "?" + urllib.parse.urlencode(_form_pairs(params))
        body = None
        if data is not None:
            if sent.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data).encode()
            else:
                body = urllib.parse.urlencode(_form_pairs(data)).encode()
                sent["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        sending: dict[str, Any] = {
            "body": body,
            "headers": sent,
            "timeout": self._timeout(timeout or self.timeout),
            "retries": False,
        }
        pool = self._origin_pool
        if pool is not None and uri.startswith(self._origin + "/") and not allow_redirects:
            path = uri[len(self._origin) :]
            reply = pool.urlopen(
                method.upper(), path, redirect=False, assert_same_host=False, **sending
            )
        else:
            reply = self.pool.request(method.upper(), uri, redirect=allow_redirects, **sending)
        return Response(reply.status, reply.data.decode("utf-8", "replace"), reply.headers)

    def _timeout(self, timeout: float) -> float | urllib3.Timeout:
        """The request's timeout; under a dial's fence, the connection must be made before the
        fence passes (so that the request is sent by then), and a fence already passed sends
        nothing."""
        send_before: float | None = getattr(self.fence, "send_before", None)
        if send_before is None:
            return timeout
        remaining = send_before - time.monotonic()
        if remaining <= 0:
            raise FencePassed("the dial's fence passed before its request was sent")
        return urllib3.Timeout(connect=min(remaining, timeout), read=timeout)


class FencePassed(Exception):
    """A dial's request was not sent: its fence passed first."""


def _form_pairs(fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """Form fields as the SDK means them: a list is one field repeated, None is left out."""
    pairs = []
    for name, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is not None:
                pairs.append((name, str(item)))
    return pairs


class TwilioProvider:
    """One Twilio account; thread-safe (one SDK client per thread)."""

    def __init__(self, account: TwilioAccount, settings: Settings | None = None) -> None:
        self.account = account
        self.settings = settings or get_settings()
        self._local = threading.local()
        # The SDK's own client has no timeout at all: this one always has one.
        self._http = PooledHttpClient(
            account.api_base_url or TWILIO_API_BASE_URL, self.settings.provider_timeout_s
        )

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(
                self.account.account_sid, self.account.auth_token, http_client=self._http
            )
            if self.account.api_base_url:
                client.api.base_url = self.account.api_base_url.rstrip("/")
            self._local.client = client
        return client

    def _call(self, request: Callable[[], T]) -> T:
        """Run one REST request, resending it only when the provider did not process it."""
        unprocessed: ProviderError | None = None
        for pause in (*RETRY_PAUSES_S, None):
            try:
                return request()
            except Exception as exc:
                error = _provider_error(exc)
                metrics.PROVIDER_ERRORS.labels(code=metrics.provider_error_code(error)).inc()
                if error.fenced and unprocessed is not None:
                    # A resend the fence held back: what the caller must know is that the
                    # provider did not process the request (an outage is counted from it).
                    raise unprocessed from exc
                if not error.retryable or error.fenced or pause is None:
                    raise error from exc
                unprocessed = error
                log.warning("provider request not processed (%s); retrying", error.message)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Place the call with our TwiML and status-callback URLs; a request that would go out
        after ``request.send_before`` (or a resend that would) is not sent."""
        self._http.fence.send_before = request.send_before
        detection = MACHINE_DETECTION.get(request.machine_detection)
        amd: dict[str, Any] = {}
        if detection is not None:
            # Asynchronous: the call runs its TwiML (the agent) as soon as it is answered, and
            # the verdict comes later, on a callback of its own.
            amd = {
                "machine_detection": detection,
                "async_amd": "true",
                "async_amd_status_callback": request.machine_detection_callback_url,
                "async_amd_status_callback_method": "POST",
            }
        try:
            call = self._call(
                lambda: self._client().calls.create(
                    to=request.to,
                    from_=request.from_,
                    url=request.twiml_url,
                    method="POST",
                    status_callback=request.status_callback_url,
                    status_callback_method="POST",
                    status_callback_event=self.settings.twilio_status_events.split(),
                    timeout=request.ringing_timeout_s,
                    time_limit=request.time_limit_s,
                    **amd,
                )
            )
        finally:
            self._http.fence.send_before = None
        return PlacedCall(sid=str(call.sid), provider_status=str(call.status))

    def find_call(
        self, to: str, callers: Sequence[str], since: datetime, exclude: Collection[str] = ()
    ) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` since ``since`` (allowing clock
        skew), other than those in ``exclude`` (an earlier attempt's calls, which the minute of
        skew may take in). One caller is filtered at Twilio; a pool is filtered here."""
        only = callers[0] if len(callers) == 1 else None
        calls = self._call(
            lambda: self._client().calls.list(
                to=to, from_=only, start_time_after=since - timedelta(minutes=1), limit=50
            )
        )
        # The SDK keeps a call's "from" as `_from` (`from` is a keyword).
        ours = [
            call
            for call in calls
            if getattr(call, "_from", None) in callers and str(call.sid) not in exclude
        ]
        if not ours:
            return None
        newest = ours[0]
        return from_twilio(
            str(newest.sid),
            str(newest.status),
            answered_by=newest.answered_by,
            duration=newest.duration,
            from_number=getattr(newest, "_from", None),
        )

    def end_call(self, sid: str, answered: bool) -> ProviderUpdate | None:
        """Hang up: cancel a call still ringing, complete one that was answered; the call's
        status as the provider answered it (the end, when it took effect at once)."""
        first, second = ("completed", "canceled") if answered else ("canceled", "completed")
        try:
            call = self._call(lambda: self._client().calls(sid).update(status=first))
        except ProviderError as error:
            if error.status != 400:
                raise
            # It moved on meanwhile (answered, or ended): try the other way once.
            call = self._call(lambda: self._client().calls(sid).update(status=second))
        return _reported(call)

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The call's current status at Twilio."""
        call = self._call(lambda: self._client().calls(sid).fetch())
        return _reported(call)

    def hang_up_on_machine(self, sid: str) -> None:
        """End the call at once (its TwiML replaced by a hang-up)."""
        self._call(lambda: self._client().calls(sid).update(twiml=_twiml_say_and_hang_up("")))

    def leave_message(self, sid: str, message: str) -> None:
        """Replace the call's TwiML: ``<Say>`` the message, then ``<Hangup/>``."""
        twiml = _twiml_say_and_hang_up(message)
        self._call(lambda: self._client().calls(sid).update(twiml=twiml))

    def check_account(self) -> None:
        """Read the account itself (one cheap request): raise ``ProviderError`` when Twilio
        refuses the credentials or cannot be reached."""
        sid = self.account.account_sid
        self._call(lambda: self._client().api.v2010.accounts(sid).fetch())


# Twilio CallStatus → (our status, outcome when final).
_TWILIO_STATUSES = {
    "queued": (CallStatus.DISPATCHED, None),
    "initiated": (CallStatus.INITIATED, None),
    "ringing": (CallStatus.INITIATED, None),
    "in-progress": (CallStatus.IN_PROGRESS, None),
    "completed": (CallStatus.COMPLETED, Outcome.ANSWERED),
    "busy": (CallStatus.FAILED, Outcome.BUSY),
    "no-answer": (CallStatus.FAILED, Outcome.NO_ANSWER),
    "failed": (CallStatus.FAILED, Outcome.CALL_FAILED),
    "canceled": (CallStatus.CANCELLED, Outcome.CANCELED),
}

# Reports that never tell more than another report of the same call: a call that rings was
# initiated, and both map to `initiated`. The API acknowledges them without queueing work.
REDUNDANT_TWILIO_STATUSES = frozenset({"ringing"})


def from_twilio(
    sid: str,
    call_status: str,
    *,
    answered_by: str | None = None,
    duration: str | int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    from_number: str | None = None,
) -> ProviderUpdate | None:
    """Map a Twilio call status (callback or REST resource) onto our states; None if unknown."""
    mapped = _TWILIO_STATUSES.get(call_status)
    if mapped is None:
        return None
    status, outcome = mapped
    if status == CallStatus.COMPLETED and is_machine(answered_by):
        status, outcome = CallStatus.VOICEMAIL, Outcome.VOICEMAIL
    seconds = int(duration) if duration not in (None, "") else None
    return ProviderUpdate(
        sid=sid,
        status=status,
        provider_status=call_status,
        outcome=outcome,
        duration_s=seconds,
        error_code=error_code or None,
        error_message=error_message or None,
        from_number=from_number or None,
        answered_by=answered_by or None,
    )


def from_twilio_report(report: dict[str, Any]) -> ProviderUpdate | None:
    """A status report as the API queues it (see ``api/telephony.py``), in our terms."""
    return from_twilio(
        report["sid"],
        report["status"],
        answered_by=report.get("answered_by"),
        duration=report.get("duration"),
        error_code=report.get("error_code"),
        error_message=report.get("error_message"),
        from_number=report.get("from"),
    )


def _reported(call: Any) -> ProviderUpdate | None:
    """A call resource as the SDK returns it (a read, or an update), in our terms."""
    return from_twilio(
        str(call.sid), str(call.status), answered_by=call.answered_by, duration=call.duration
    )


_providers: dict[str, TwilioProvider] = {}
_providers_lock = threading.Lock()


def provider_for(credentials_ref: str) -> TwilioProvider:
    """The process-wide provider for a caller number's credentials."""
    settings = get_settings()
    account = account_for(settings, credentials_ref)
    with _providers_lock:
        provider = _providers.get(account.account_sid)
        if provider is None:
            provider = _providers[account.account_sid] = TwilioProvider(account, settings)
        return provider
