"""``VobizProvider``: one Vobiz account's calls through the SDK (``client`` has the account
and the errors), and ``provider_for``, the process-wide provider of a caller number.

The SDK (and lxml and requests with it) is imported with a process's first Vobiz call, not
with this module: a worker that never dials Vobiz does not carry it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus
from shared.settings import Settings, get_settings
from shared.telephony.port import DialRequest, PlacedCall
from shared.telephony.resend import FencePassed, send_resending
from shared.telephony.vobiz import urls
from shared.telephony.vobiz.client import (
    ACCOUNT_PATH,
    FIND_MAX_PAGES,
    FIND_PAGE_SIZE,
    VobizAccount,
    account_for,
    created_at_of,
    field_of,
    from_resource,
    provider_error,
)
from shared.telephony.vobiz.statuses import e164
from shared.voicemail import MachineDetection

if TYPE_CHECKING:
    import vobiz

log = logging.getLogger(__name__)

T = TypeVar("T")
# The HTTP status of a lookup that Vobiz answers with "no such call" (in the state asked).
_NOT_FOUND = frozenset({404})


class VobizProvider:
    """One Vobiz account; thread-safe (one SDK client per thread)."""

    def __init__(self, account: VobizAccount, settings: Settings | None = None) -> None:
        self.account = account
        self.settings = settings or get_settings()
        self._local = threading.local()

    @property
    def name(self) -> str:
        """``vobiz``."""
        return urls.NAME

    @property
    def pacing_key(self) -> str:
        """The provider connection's id, or ``vobiz:`` and the environment account's auth id:
        Vobiz limits calls per account, and two accounts never share a budget."""
        return self.account.connection_id or f"{urls.NAME}:{self.account.auth_id}"

    @property
    def connect_agent_detection(self) -> MachineDetection:
        """``SWITCHBOARD_VOBIZ_MACHINE_DETECTION``: detection, or none."""
        if self.settings.vobiz_machine_detection:
            return MachineDetection.ANSWERED_BY
        return MachineDetection.OFF

    @property
    def _callback_account(self) -> str | None:
        """The auth id our callback URLs name (a connection's), so they are verified with it."""
        return self.account.auth_id if self.account.connection_id else None

    def _client(self) -> vobiz.RestClient:
        client: vobiz.RestClient | None = getattr(self._local, "client", None)
        if client is None:
            import vobiz  # the SDK, at the first Vobiz call (module docstring)

            client = vobiz.RestClient(
                self.account.auth_id,
                self.account.auth_token,
                timeout=self.settings.provider_timeout_s,
            )
            # The SDK builds every calls URL from this (its module constant by default).
            client.base_uri = self.account.api_base_url + ACCOUNT_PATH
            self._local.client = client
        return client

    def _fenced_client(self, send_before: float | None) -> vobiz.RestClient:
        """The thread's client, with a timeout that makes the connection before the dial's
        fence passes (so the request is sent by then); nothing when it has passed already."""
        client = self._client()
        timeout = self.settings.provider_timeout_s
        client.timeout = timeout
        if send_before is not None:
            remaining = send_before - time.monotonic()
            if remaining <= 0:
                raise FencePassed("the dial's fence passed before its request was sent")
            client.timeout = (min(remaining, timeout), timeout)
        return client

    def _call(self, request: Callable[[], T], *, creates: bool = False, lookup: bool = False) -> T:
        """Run one REST request, resending it only when Vobiz did not process it (a 5xx to a
        request that creates a call is not one of those: ``provider_error``). A ``lookup``'s
        404 is Vobiz's answer that it has no such call in the state asked, not a failure."""
        return send_resending(
            request,
            lambda exc: provider_error(exc, creates=creates),
            answers=_NOT_FOUND if lookup else frozenset(),
        )

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Place the call with our answer, ring and hang-up URLs, the ring timeout and the time
        limit, and asynchronous machine detection when the request asks for it; a request (or
        a resend) that would go out after ``request.send_before`` is not sent."""
        call_id, account = request.call_id, self._callback_account
        status_url = request.status_callback_url or urls.status_callback_url(
            call_id, account, self.settings
        )
        params: dict[str, Any] = {
            "answer_method": "POST",
            "ring_url": status_url,
            "ring_method": "POST",
            "hangup_url": status_url,
            "hangup_method": "POST",
            "ring_timeout": request.ringing_timeout_s,
            "time_limit": request.time_limit_s,
        }
        if request.machine_detection is not MachineDetection.OFF:
            # Asynchronous: the call runs its XML (the agent) as soon as it is answered, and
            # the result comes later to a URL of its own. Vobiz has no wait for the greeting's
            # end: the result is reported when detection ends.
            params["machine_detection"] = "true"
            params["machine_detection_url"] = (
                request.machine_detection_callback_url
                or urls.machine_detection_url(call_id, account, self.settings)
            )
            params["machine_detection_method"] = "POST"
        answer_url = request.answer_url or urls.answer_url(call_id, account, self.settings)
        response = self._call(
            lambda: self._fenced_client(request.send_before).calls.create(
                from_=request.from_, to_=request.to, answer_url=answer_url, **params
            ),
            creates=True,
        )
        sid = str(field_of(response, "request_uuid", "call_uuid") or "")
        if not sid:
            raise ProviderError(f"vobiz accepted a call without its id: {response}", ambiguous=True)
        update = ProviderUpdate(
            sid=sid,
            status=CallStatus.DISPATCHED,
            provider_status="queued",
            from_number=request.from_,
        )
        return PlacedCall(sid=sid, provider_status="queued", update=update)

    def find_call(
        self, to: str, callers: Sequence[str], since: datetime, exclude: Collection[str] = ()
    ) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` created since ``since`` (a minute
        of clock skew allowed), other than those in ``exclude``. The account's calls are read
        newest first, page by page, until they are older than that, then its live and queued
        calls one by one (the list may hold only finished calls), and matched here: no filter
        of Vobiz's is trusted to say that a call is not there. Raises (ambiguous) when there
        are more calls than are read."""
        wanted, pool = _digits(to), {_digits(number) for number in callers}

        def ours(sid: str, call: Any) -> bool:
            return (
                bool(sid)
                and sid not in exclude
                and _digits(field_of(call, "to", "to_number")) == wanted
                and _digits(field_of(call, "from", "from_number")) in pool
            )

        oldest = (since - timedelta(minutes=1)).astimezone(UTC)
        found = self._find_recorded(ours, oldest)
        return found if found is not None else self._find_live(ours)

    def _find_recorded(
        self, ours: Callable[[str, Any], bool], oldest: datetime
    ) -> ProviderUpdate | None:
        """The newest of the account's calls since ``oldest`` that is ``ours``."""
        for page in range(FIND_MAX_PAGES):
            listing = self._call(
                lambda page=page: self._client().calls.list(  # type: ignore[misc]
                    limit=FIND_PAGE_SIZE, offset=page * FIND_PAGE_SIZE
                )
            )
            objects = list(getattr(listing, "objects", None) or [])
            for call in objects:
                sid = str(field_of(call, "call_uuid", "request_uuid") or "")
                created = created_at_of(call)
                if created is not None and created < oldest:
                    return None  # newest first: every later one is older still
                if ours(sid, call):
                    return from_resource(sid, call)
            if len(objects) < FIND_PAGE_SIZE:
                return None
        raise ProviderError(
            f"vobiz: more than {FIND_MAX_PAGES * FIND_PAGE_SIZE} calls since {oldest}; "
            "the call was not found among them",
            ambiguous=True,
        )

    def _find_live(self, ours: Callable[[str, Any], bool]) -> ProviderUpdate | None:
        """The first of the account's live, then queued, calls that is ``ours``."""
        for status in ("live", "queued"):
            listing = self._call(
                lambda status=status: self._client().calls.list(status=status)  # type: ignore[misc]
            )
            sids = [str(sid) for sid in (getattr(listing, "calls", None) or [])]
            if len(sids) > FIND_PAGE_SIZE * FIND_MAX_PAGES:
                raise ProviderError(f"vobiz: {len(sids)} {status} calls to look at", ambiguous=True)
            for sid in sids:
                try:
                    call = self._call(
                        lambda sid=sid, status=status: self._client().calls.get(  # type: ignore[misc]
                            sid, status=status
                        ),
                        lookup=True,
                    )
                except ProviderError as error:
                    if error.status in _NOT_FOUND:
                        continue  # ended meanwhile: the recorded calls were read before
                    raise
                if ours(sid, call):
                    return from_resource(sid, call)
        return None

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The call's current status at Vobiz: live (ringing or answered), else its record
        once ended, else queued; None when Vobiz has no such call."""
        client = self._client
        reads: list[Callable[[], Any]] = [
            lambda: client().calls.get_live(sid),
            lambda: client().calls.get(sid),
            lambda: client().calls.get_queued(sid),
        ]
        for read in reads:
            try:
                resource = self._call(read, lookup=True)
            except ProviderError as error:
                if error.status in _NOT_FOUND:
                    continue
                raise
            update = from_resource(sid, resource)
            if update is not None:
                return update
        return None

    def end_call(self, sid: str, answered: bool) -> ProviderUpdate | None:
        """Hang up (Vobiz's one request cancels a ringing call and ends an answered one);
        its end comes with the hang-up callback, which follows at once."""
        del answered  # one request either way
        self._call(lambda: self._client().calls.hangup(sid))
        return None

    def hang_up_on_machine(self, sid: str) -> None:
        """End the call at once."""
        self.end_call(sid, answered=True)

    def leave_message(self, sid: str, message: str) -> None:
        """Transfer the call to our message document (``urls.message_url``): Vobiz fetches
        it, speaks the message, then hangs up."""
        url = urls.message_url(sid, message, self._callback_account, self.settings)
        self._call(
            lambda: self._client().calls.transfer(
                sid, legs="aleg", aleg_url=url, aleg_method="POST"
            )
        )

    def check_account(self) -> None:
        """Read the account's live calls (one cheap request of the calls API): raise
        ``ProviderError`` when Vobiz refuses the credentials or cannot be reached."""
        self._call(lambda: self._client().calls.list_live())


def _digits(number: Any) -> str:
    """A number's digits, however Vobiz writes it (with or without ``+``)."""
    return "".join(ch for ch in str(e164(str(number)) if number else "") if ch.isdigit())


_providers: dict[tuple[str, str | None], VobizProvider] = {}
_providers_lock = threading.Lock()


def provider_for(credentials_ref: str) -> VobizProvider:
    """The process-wide provider for a caller number's credentials."""
    settings = get_settings()
    account = account_for(settings, credentials_ref)
    key = (account.auth_id, account.connection_id)
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None or provider.account != account:
            provider = _providers[key] = VobizProvider(account, settings)
        return provider
