"""Provider connections: a workspace's accounts at Twilio, Vobiz or a SIP trunk, their secrets
encrypted at rest (``secrets``), stored and checked (``service``, ``repository``), and resolved
for a caller number or a callback (``accounts``: ``resolve``, ``by_account``).

The provider adapters import this package: the lookups, which read the database, are imported
at their first use, so an adapter pulls in no SQL until it is asked for an account other than
the environment's (``tests/telephony/test_twilio_callbacks.py``)."""

from __future__ import annotations

from shared.connections.model import DEFAULT_REF, Connection, ConnectionUnavailable

__all__ = [
    "DEFAULT_REF",
    "Connection",
    "ConnectionUnavailable",
    "by_account",
    "forget",
    "resolve",
]


def resolve(credentials_ref: str) -> Connection | None:
    """``accounts.resolve``: the connection a caller number's ``credentials_ref`` names; None
    for ``default``."""
    from shared.connections import accounts

    return accounts.resolve(credentials_ref)


def by_account(provider: str, account_id: str) -> list[Connection]:
    """``accounts.by_account``: every connection of ``provider`` with that public account id."""
    from shared.connections import accounts

    return accounts.by_account(provider, account_id)


def forget(connection_id: str | None = None, provider: str = "", account_id: str = "") -> None:
    """``accounts.forget``: drop cached reads of a connection and of its account."""
    from shared.connections import accounts

    accounts.forget(connection_id, provider, account_id)
