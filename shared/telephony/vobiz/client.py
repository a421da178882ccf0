"""Vobiz, through the official SDK (``vobiz-python``): one account's calls. With no Vobiz
credentials configured the client talks to the sandbox carrier's Vobiz API
(``settings.sandbox_url``).

The SDK builds every URL from its client's ``base_uri``, so pointing it elsewhere is one
attribute; each thread has its own client (the SDK's ``requests`` session is not shared
between threads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3

from shared import connections
from shared.connections import Connection, ConnectionUnavailable
from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.settings import (
    SANDBOX_VOBIZ_AUTH_ID,
    SANDBOX_VOBIZ_AUTH_TOKEN,
    Settings,
)
from shared.telephony.resend import FencePassed
from shared.telephony.vobiz import urls
from shared.telephony.vobiz.statuses import from_vobiz, was_answered

# Vobiz's REST API, as the SDK names it (``vobiz.rest.client.VOBIZ_API``); the calls of an
# account are under ``/v1/Account/{auth_id}/``.
VOBIZ_API_BASE_URL = "https://api.vobiz.ai/api"
ACCOUNT_PATH = "/v1/Account"
# How far back the account's calls are read for a call to reconcile (a page has at most 100).
FIND_PAGE_SIZE = 100
FIND_MAX_PAGES = 20


@dataclass(frozen=True)
class VobizAccount:
    """Credentials of one Vobiz account, and where its REST API lives."""

    auth_id: str
    auth_token: str
    api_base_url: str
    # The provider connection it comes from; None for the environment's account.
    connection_id: str | None = None


def _api_base_url(settings: Settings) -> str:
    """Where the environment reaches Vobiz: the configured URL, else Vobiz itself; in
    development without a Vobiz account of its own, the sandbox carrier (every account then
    dials the sandbox, as in the tests). Production never dials the sandbox."""
    if settings.vobiz_api_base_url or settings.vobiz_auth_id or settings.env != "dev":
        return (settings.vobiz_api_base_url or VOBIZ_API_BASE_URL).rstrip("/")
    return settings.sandbox_url.rstrip("/") + "/api"


def connection_account(connection: Connection, settings: Settings) -> VobizAccount:
    """The Vobiz account of a provider connection: its auth id and auth token."""
    auth_id, token = connection.credentials(urls.NAME, "Vobiz")
    return VobizAccount(auth_id, token, _api_base_url(settings), connection_id=connection.id)


def account_for(settings: Settings, credentials_ref: str = "default") -> VobizAccount:
    """The account a caller number's ``credentials_ref`` names: a provider connection, or
    ``default``, the environment's (``SWITCHBOARD_VOBIZ_*``; without one, the sandbox
    carrier's in development, and none in production). ``ConnectionUnavailable`` for a
    connection that cannot be used, or for no account at all."""
    connection = connections.resolve(credentials_ref)
    if connection is not None:
        return connection_account(connection, settings)
    if settings.vobiz_auth_id:
        return VobizAccount(
            settings.vobiz_auth_id, settings.vobiz_auth_token, _api_base_url(settings)
        )
    if settings.env != "dev":
        # Production never dials the sandbox carrier: the batch fails, saying what to set.
        raise ConnectionUnavailable(
            "no Vobiz account: set SWITCHBOARD_VOBIZ_AUTH_ID and SWITCHBOARD_VOBIZ_AUTH_TOKEN, "
            "or give the number a provider connection",
            auth_failed=True,
        )
    return VobizAccount(SANDBOX_VOBIZ_AUTH_ID, SANDBOX_VOBIZ_AUTH_TOKEN, _api_base_url(settings))


def _status_of(exc: Exception) -> int | None:
    """The HTTP status behind one of the SDK's errors (it keeps only a message)."""
    from vobiz import exceptions as vobiz_errors  # loaded by the call that raised it

    known = {
        vobiz_errors.AuthenticationError: 401,
        vobiz_errors.ForbiddenError: 403,
        vobiz_errors.GeoPermissionError: 403,
        vobiz_errors.ResourceNotFoundError: 404,
        vobiz_errors.ValidationError: 400,
        vobiz_errors.VobizServerError: 500,
    }
    for kind, status in known.items():
        if isinstance(exc, kind):
            return status
    words = str(exc).split()
    if "code" in words and words.index("code") + 1 < len(words):
        following = words[words.index("code") + 1]
        if following.isdigit():
            return int(following)  # "Received status code 503 for the HTTP method ..."
    return 422 if isinstance(exc, vobiz_errors.InvalidRequestError) else None


def _unconnected(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a connection error happened before the request was sent (refused, unresolved,
    or not connected in time)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    unsent = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    return isinstance(reason, unsent)


def provider_error(exc: Exception, *, creates: bool = False) -> ProviderError:
    """One of the SDK's (or the transport's) errors in our terms. A 5xx answer to a request
    that creates a call may come after Vobiz placed it: ambiguous, never sent again."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, FencePassed):
        return ProviderError(str(exc), retryable=True, fenced=True)
    from vobiz import exceptions as vobiz_errors  # the SDK, at the first Vobiz call

    if isinstance(exc, vobiz_errors.VobizRestError):
        status = _status_of(exc)
        message = f"vobiz {status or 'error'}: {exc}"
        server_side = status is not None and status >= 500
        return ProviderError(
            message,
            status=status,
            retryable=status == 429 or (server_side and not creates),
            ambiguous=server_side and creates,
            auth_failed=status == 401,
        )
    if isinstance(exc, requests.exceptions.ConnectionError) and _unconnected(exc):
        return ProviderError(f"vobiz unreachable: {exc}", retryable=True)
    # Anything else after the request may have been sent: treat as ambiguous, never re-dial.
    return ProviderError(f"vobiz request failed: {exc!r}", ambiguous=True)


def field_of(resource: Any, *names: str) -> Any:
    """The first of ``names`` the SDK's response object has (Vobiz names some fields
    differently in its live, queued and finished views of a call)."""
    for name in names:
        value = getattr(resource, name, None)
        if value not in (None, ""):
            return value
    return None


def created_at_of(resource: Any) -> datetime | None:
    text = field_of(resource, "created_at", "initiation_time")
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_resource(sid: str, resource: Any) -> ProviderUpdate | None:
    """A call as one of the SDK's reads returns it, in our terms."""
    status = field_of(resource, "call_status", "status")
    if not isinstance(status, str):
        return None
    answer_time = field_of(resource, "answer_time")
    duration = field_of(resource, "call_duration", "duration", "bill_duration")
    return from_vobiz(
        sid,
        status,
        answered=was_answered(answer_time, duration),
        hangup_cause=field_of(resource, "hangup_cause_name"),
        duration=duration,
        from_number=field_of(resource, "from", "from_number"),
    )
