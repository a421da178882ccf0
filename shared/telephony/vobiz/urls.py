"""The URLs we give Vobiz for a call: its answer URL (the VobizXML it runs once answered), its
ring and hang-up callbacks and its machine-detection callback (paths from ``shared.urls``).

A call placed through a provider connection's account carries that account's auth id in the
query of each URL (``account``), so that its callbacks are verified with that account's auth
token; Vobiz signs the URL with its query, so the name cannot be changed on the way."""

from __future__ import annotations

from urllib.parse import urlencode

from shared.settings import Settings, get_settings
from shared.urls import MACHINE_DETECTION, MESSAGE, MESSAGE_TEXT, STATUS, provider_url

NAME = "vobiz"
# Vobiz fetches an answered call's VobizXML here (the port's answer-document endpoint).
ANSWER = "answer"
# The query parameter naming a provider connection's account (its auth id).
ACCOUNT_PARAMETER = "account"


def _with_account(url: str, account: str | None) -> str:
    return url if account is None else f"{url}?{urlencode({ACCOUNT_PARAMETER: account})}"


def status_callback_url(
    call_id: str, account: str | None = None, settings: Settings | None = None
) -> str:
    """Where Vobiz posts the ring and hang-up events of a call."""
    return _with_account(provider_url(NAME, STATUS, call_id, settings or get_settings()), account)


def machine_detection_url(
    call_id: str, account: str | None = None, settings: Settings | None = None
) -> str:
    """Where Vobiz posts a call's asynchronous machine-detection result."""
    url = provider_url(NAME, MACHINE_DETECTION, call_id, settings or get_settings())
    return _with_account(url, account)


def answer_url(call_id: str, account: str | None = None, settings: Settings | None = None) -> str:
    """Where Vobiz fetches the VobizXML a call runs once it is answered."""
    return _with_account(provider_url(NAME, ANSWER, call_id, settings or get_settings()), account)


def message_url(
    sid: str, message: str, account: str | None = None, settings: Settings | None = None
) -> str:
    """Where Vobiz fetches the VobizXML that speaks ``message`` on the call ``sid`` and hangs
    up (the text in the query, which Vobiz's signature covers)."""
    query = {MESSAGE_TEXT: message, **({ACCOUNT_PARAMETER: account} if account else {})}
    url = provider_url(NAME, MESSAGE, sid, settings or get_settings())
    return f"{url}?{urlencode(query)}"
