"""A phone number's account at its provider: ``resolve(credentials_ref)`` and, for callbacks
that name their account, ``by_account(provider, account_id)``.

Both read the database with a short session of their own and keep what they read for
``SWITCHBOARD_CONNECTION_CACHE_TTL_S`` (30 s) per process: a dial, a pacing key and a callback
ask for the same few accounts many times a second. A connection deleted or changed in this
process is forgotten at once (``forget``); in other processes within the TTL.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.connections import repository
from shared.connections.model import DEFAULT_REF, Connection, ConnectionUnavailable
from shared.connections.secrets import SecretsUnavailable, decrypt_secrets
from shared.db import new_session
from shared.models import ProviderConnection
from shared.settings import get_settings

# Lookups of accounts nobody has (forged callbacks) are cached too; past this many entries the
# cache starts afresh rather than grow.
MAX_CACHED = 10_000


_lock = threading.Lock()
_by_id: dict[str, tuple[float, Connection | None]] = {}
_by_account: dict[tuple[str, str], tuple[float, list[Connection]]] = {}


def _connection(row: ProviderConnection) -> Connection:
    try:
        secrets = decrypt_secrets(row.secret)
    except SecretsUnavailable as exc:
        raise ConnectionUnavailable(
            f"provider connection {row.id}: {exc.items[0].msg}", retryable=True
        ) from exc
    return Connection(
        id=row.id,
        workspace_id=row.workspace_id,
        provider=row.provider,
        account_id=row.account_id,
        secrets=secrets,
        config=dict(row.config or {}),
        updated_at=row.updated_at,
    )


def _fresh(entry: tuple[float, Any] | None) -> bool:
    return entry is not None and entry[0] > time.monotonic()


def _expiry() -> float:
    return time.monotonic() + get_settings().connection_cache_ttl_s


def resolve(credentials_ref: str) -> Connection | None:
    """The connection a caller number's ``credentials_ref`` names; None for ``default`` (the
    environment's account of the provider). ``ConnectionUnavailable`` when there is no such
    connection, or its secrets cannot be read."""
    if not credentials_ref or credentials_ref == DEFAULT_REF:
        return None
    with _lock:
        entry = _by_id.get(credentials_ref)
    if entry is None or not _fresh(entry):
        with new_session() as session:
            row = repository.connection_by_id(session, credentials_ref)
            connection = None if row is None else _connection(row)
        entry = (_expiry(), connection)
        with _lock:
            if len(_by_id) >= MAX_CACHED:
                _by_id.clear()
            _by_id[credentials_ref] = entry
    if entry[1] is None:
        raise ConnectionUnavailable(
            f"provider connection {credentials_ref!r} does not exist", auth_failed=True
        )
    return entry[1]


def by_account(provider: str, account_id: str) -> list[Connection]:
    """Every connection of ``provider`` whose public account id is ``account_id`` (usually one;
    two workspaces may hold the same account). Empty for an account nobody has."""
    key = (provider, account_id)
    with _lock:
        entry = _by_account.get(key)
    if entry is None or not _fresh(entry):
        with new_session() as session:
            rows = repository.connections_by_account(session, provider, account_id)
            connections = [_connection(row) for row in rows]
        entry = (_expiry(), connections)
        with _lock:
            if len(_by_account) >= MAX_CACHED:
                _by_account.clear()
            _by_account[key] = entry
    return entry[1]


def forget(connection_id: str | None = None, provider: str = "", account_id: str = "") -> None:
    """Drop cached reads of a connection (by id) and of its account; with no argument, all."""
    with _lock:
        if connection_id is None and not provider:
            _by_id.clear()
            _by_account.clear()
            return
        if connection_id is not None:
            _by_id.pop(connection_id, None)
        _by_account.pop((provider, account_id), None)
