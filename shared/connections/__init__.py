"""Provider connections: a workspace's accounts at Twilio, Vobiz or a SIP trunk, their secrets
encrypted at rest (``secrets``), stored and checked (``service``, ``repository``), and resolved
for a caller number or a callback (``accounts``: ``resolve``, ``by_account``)."""

from __future__ import annotations

from shared.connections.accounts import (
    DEFAULT_REF,
    Connection,
    ConnectionUnavailable,
    by_account,
    forget,
    resolve,
)

__all__ = [
    "DEFAULT_REF",
    "Connection",
    "ConnectionUnavailable",
    "by_account",
    "forget",
    "resolve",
]
