"""Twilio, through the official SDK: one account's calls. With no credentials configured the
client talks to the sandbox carrier (``settings.sandbox_url``), a Twilio-compatible server on
loopback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

# The SDK imports its REST resources (the account's call list among them) on first use. They
# are imported with this module instead: when a worker starts, before it is ready and its heap
# settles, not during its first dials, with every thread of the pool waiting on the import lock.
import twilio.rest.api.v2010.account.call  # noqa: F401
import urllib3
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from shared import connections
from shared.connections import Connection
from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, Settings, get_settings
from shared.telephony.port import DialRequest, PlacedCall
from shared.telephony.resend import FencePassed, send_resending
from shared.telephony.twilio import urls
from shared.telephony.twilio.http import PooledHttpClient
from shared.telephony.twilio.statuses import from_resource, from_twilio
from shared.telephony.twilio.twiml import say_and_hang_up
from shared.voicemail import MachineDetection

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


# The most calls a lookup that cannot filter by destination at Twilio reads (find_call).
SCAN_LIMIT = 1000
TWILIO_API_BASE_URL = "https://api.twilio.com"


@dataclass(frozen=True)
class TwilioAccount:
    """Credentials of one Twilio account, and where its REST API lives."""

    account_sid: str
    auth_token: str
    api_base_url: str | None = None  # None: Twilio itself
    # The provider connection it comes from; None for the environment's account.
    connection_id: str | None = None


def _api_base_url(settings: Settings) -> str | None:
    """Where the environment reaches Twilio's REST API: the sandbox carrier when it has no
    Twilio account of its own (every account then dials the sandbox, as in the tests)."""
    if settings.twilio_account_sid:
        return settings.twilio_api_base_url or None
    return settings.sandbox_url


def connection_account(connection: Connection, settings: Settings) -> TwilioAccount:
    """The Twilio account of a provider connection: its SID and auth token, reached where the
    environment reaches Twilio."""
    sid, token = connection.credentials(urls.NAME, "Twilio")
    return TwilioAccount(sid, token, _api_base_url(settings), connection_id=connection.id)


def account_for(settings: Settings, credentials_ref: str = "default") -> TwilioAccount:
    """The account a caller number's ``credentials_ref`` names: a provider connection of its
    workspace, or ``default``, the environment's (``SWITCHBOARD_TWILIO_*``; without one, the
    sandbox carrier's). ``ConnectionUnavailable`` for a connection that cannot be used."""
    connection = connections.resolve(credentials_ref)
    if connection is not None:
        return connection_account(connection, settings)
    sid, token = (
        (settings.twilio_account_sid, settings.twilio_auth_token)
        if settings.twilio_account_sid
        else (SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN)
    )
    return TwilioAccount(sid, token, _api_base_url(settings))


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

    @property
    def name(self) -> str:
        """``twilio``."""
        return urls.NAME

    @property
    def pacing_key(self) -> str:
        """Twilio paces calls per account: a connection's id, or the environment's account
        SID, so no two connections share a budget."""
        return self.account.connection_id or self.account.account_sid

    @property
    def connect_agent_detection(self) -> MachineDetection:
        """``SWITCHBOARD_TWILIO_MACHINE_DETECTION`` (``connect_agent_detection``)."""
        return connect_agent_detection(self.settings)

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
        return send_resending(request, _provider_error)

    def place_call(
        self,
        request: DialRequest,
        *,
        to: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> PlacedCall:
        """Place the call with our TwiML and status-callback URLs; a request that would go out
        after ``request.send_before`` (or a resend that would) is not sent. ``to`` and
        ``extra`` serve adapters that dial through this account: a destination other than
        ``request.to`` (a SIP URI), and more of the SDK's ``calls.create`` arguments."""
        settings = self.settings
        call_id = request.call_id
        detection = MACHINE_DETECTION.get(request.machine_detection)
        amd: dict[str, Any] = {}
        if detection is not None:
            # Asynchronous: the call runs its TwiML (the agent) as soon as it is answered, and
            # the verdict comes later, on a callback of its own.
            amd = {
                "machine_detection": detection,
                "async_amd": "true",
                "async_amd_status_callback": request.machine_detection_callback_url
                or urls.amd_callback_url(call_id, settings),
                "async_amd_status_callback_method": "POST",
            }
        answer_url = request.answer_url or urls.twiml_url(call_id, settings)
        status_url = request.status_callback_url or urls.status_callback_url(call_id, settings)
        self._http.fence.send_before = request.send_before
        try:
            call = self._call(
                lambda: self._client().calls.create(
                    to=to or request.to,
                    from_=request.from_,
                    url=answer_url,
                    method="POST",
                    status_callback=status_url,
                    status_callback_method="POST",
                    status_callback_event=settings.twilio_status_events.split(),
                    timeout=request.ringing_timeout_s,
                    time_limit=request.time_limit_s,
                    **amd,
                    **(extra or {}),
                )
            )
        finally:
            self._http.fence.send_before = None
        sid, status = str(call.sid), str(call.status)
        update = from_twilio(sid, status, from_number=request.from_) or ProviderUpdate(
            sid=sid, status=CallStatus.DISPATCHED, provider_status=status, from_number=request.from_
        )
        return PlacedCall(sid=sid, provider_status=status, update=update)

    def find_call(
        self,
        to: str,
        callers: Sequence[str],
        since: datetime,
        exclude: Collection[str] = (),
        *,
        reaches: Callable[[str], bool] | None = None,
    ) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` since ``since`` (allowing clock
        skew), other than those in ``exclude`` (an earlier attempt's calls, which the minute of
        skew may take in). One caller is filtered at Twilio; a pool is filtered here.

        With ``reaches`` (a SIP URI, which Twilio may record otherwise than it was dialed: its
        headers or parameters left out), Twilio is not asked to filter by destination: the
        calls from the caller since then are read, at most ``SCAN_LIMIT`` (more is ambiguous:
        looked up again later, never taken as absent), and ``reaches`` picks them by their
        ``to``."""
        only = callers[0] if len(callers) == 1 else None
        calls = self._call(
            lambda: self._client().calls.list(
                to=to if reaches is None else None,
                from_=only,
                start_time_after=since - timedelta(minutes=1),
                limit=50 if reaches is None else SCAN_LIMIT + 1,
            )
        )
        if reaches is not None and len(calls) > SCAN_LIMIT:
            raise ProviderError(
                f"more than {SCAN_LIMIT} calls from the caller since the dial: whether this "
                "one exists cannot be told from them",
                ambiguous=True,
            )
        # The SDK keeps a call's "from" as `_from` (`from` is a keyword).
        ours = [
            call
            for call in calls
            if getattr(call, "_from", None) in callers
            and str(call.sid) not in exclude
            and (reaches is None or reaches(str(call.to)))
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
        return from_resource(call)

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The call's current status at Twilio."""
        call = self._call(lambda: self._client().calls(sid).fetch())
        return from_resource(call)

    def hang_up_on_machine(self, sid: str) -> None:
        """End the call at once (its TwiML replaced by a hang-up)."""
        self._call(lambda: self._client().calls(sid).update(twiml=say_and_hang_up("")))

    def leave_message(self, sid: str, message: str) -> None:
        """Replace the call's TwiML: ``<Say>`` the message, then ``<Hangup/>``."""
        twiml = say_and_hang_up(message)
        self._call(lambda: self._client().calls(sid).update(twiml=twiml))

    def check_account(self) -> None:
        """Read the account itself (one cheap request): raise ``ProviderError`` when Twilio
        refuses the credentials or cannot be reached."""
        sid = self.account.account_sid
        self._call(lambda: self._client().api.v2010.accounts(sid).fetch())


# One provider per account as last read: a connection's changed secrets make a new one.
_providers: dict[tuple[str, object], TwilioProvider] = {}
_providers_lock = threading.Lock()


def provider_for(credentials_ref: str) -> TwilioProvider:
    """The process-wide provider for a caller number's credentials: per connection (and its
    ``updated_at``), or the environment's account for ``default``."""
    settings = get_settings()
    connection = connections.resolve(credentials_ref)
    key: tuple[str, object] = (
        ("default", settings.twilio_account_sid)
        if connection is None
        else (connection.id, connection.updated_at)
    )
    with _providers_lock:
        provider = _providers.get(key)
    if provider is not None:
        return provider
    account = (
        account_for(settings) if connection is None else connection_account(connection, settings)
    )
    with _providers_lock:
        return _providers.setdefault(key, TwilioProvider(account, settings))
