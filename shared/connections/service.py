"""Provider connections: a workspace's accounts at its providers, created, listed, read and
deleted; the check that a phone number's ``credentials_ref`` names one of them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from shared.connections import accounts, repository
from shared.connections.secrets import (
    SecretsUnavailable,
    decrypt_secrets,
    encrypt_secrets,
    rotate_token,
)
from shared.db import after_commit
from shared.errors import Conflict, ErrorItem, Loc, NotFound, ValidationFailed
from shared.ids import new_id
from shared.models import ProviderConnection

if TYPE_CHECKING:
    from shared.schemas.connections import ProviderConnectionCreate

PROVIDERS = ("twilio", "vobiz", "sip_trunk")
TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
# What the API body calls each provider's public account id, and each secret it takes.
ACCOUNT_FIELD = {"twilio": "account_sid", "vobiz": "auth_id", "sip_trunk": "address"}
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "twilio": ("auth_token",),
    "vobiz": ("auth_token",),
    "sip_trunk": ("username", "password"),
}
MAX_SECRET_LENGTH = 500


def _provider_problems(
    provider: str, account_id: str, secrets: Mapping[str, str], loc: Loc
) -> list[ErrorItem]:
    """What is wrong with a provider's account id and secrets, each at its body field."""
    problems = []
    account_loc = [*loc, ACCOUNT_FIELD[provider]]
    if not account_id.strip():
        problems.append(ErrorItem(account_loc, "field required", "missing"))
    elif provider == "twilio" and not TWILIO_ACCOUNT_SID.fullmatch(account_id):
        problems.append(
            ErrorItem(
                account_loc,
                "a Twilio account SID is AC followed by 32 hexadecimal digits",
                "value_error",
            )
        )
    elif any(character.isspace() for character in account_id):
        problems.append(ErrorItem(account_loc, "may not contain whitespace", "value_error"))
    if provider != "sip_trunk":  # a trunk's credentials are its own (outbound_trunk_config)
        for name in SECRET_FIELDS[provider]:
            if not secrets.get(name, "").strip():
                problems.append(ErrorItem([*loc, name], "field required", "missing"))
    for name, value in secrets.items():
        if len(value) > MAX_SECRET_LENGTH:
            problems.append(
                ErrorItem(
                    [*loc, name], f"at most {MAX_SECRET_LENGTH} characters", "string_too_long"
                )
            )
    return problems


def create_connection(
    session: Session,
    workspace_id: str,
    provider: str,
    name: str,
    account_id: str,
    secrets: Mapping[str, str],
    config: Mapping[str, Any] | None = None,
    *,
    loc: Loc = ("body",),
) -> ProviderConnection:
    """Store a workspace's account at ``provider`` with its ``secrets`` encrypted (never
    returned by the API) and its non-secret ``config``; flushed, not committed.

    ``account_id`` is the account's public identifier: a Twilio account SID (``AC`` + 32 hex),
    a Vobiz auth id, a SIP trunk's address. ``secrets``: Twilio and Vobiz ``{"auth_token"}``;
    a SIP trunk ``{"username", "password"}`` (checked by its caller), with ``config``
    ``{"address", "transport", "media_encryption", "headers"}``. Problems are a 422 at ``loc``
    plus the field (``account_sid``, ``auth_id`` or ``address``; the secret's name); a name the
    workspace already uses is a 409 at ``loc + ["name"]``; no secrets key configured is a 503
    naming ``SWITCHBOARD_SECRETS_KEY``. A phone number then names the connection by its id in
    ``credentials_ref``."""
    if provider not in PROVIDERS:
        raise ValidationFailed.one([*loc, "provider"], f"unknown provider {provider!r}")
    problems = _provider_problems(provider, account_id, secrets, loc)
    if not name.strip():
        problems.insert(0, ErrorItem([*loc, "name"], "may not be empty", "value_error"))
    if problems:
        raise ValidationFailed(problems)
    row = ProviderConnection(
        id=new_id("conn"),
        workspace_id=workspace_id,
        provider=provider,
        name=name,
        account_id=account_id,
        secret=encrypt_secrets(dict(secrets)),
        config=dict(config or {}),
    )
    stored = repository.insert_connection(session, row)
    if stored is None:
        raise Conflict([*loc, "name"], f"a provider connection named {name!r} already exists")
    # A callback of this account may have been looked up (and found nobody) before.
    after_commit(session, lambda: accounts.forget(stored.id, provider, account_id))
    return stored


def create_from_request(
    session: Session, workspace_id: str, body: ProviderConnectionCreate
) -> ProviderConnection:
    """``POST /v1/provider-connections``: a Twilio or Vobiz account (a SIP trunk's connection
    comes with its phone number's ``outbound_trunk_config``)."""
    if body.provider == "sip_trunk":
        raise ValidationFailed.one(
            ["body", "provider"],
            "a sip_trunk connection is made with its phone number's outbound_trunk_config",
        )
    account_field = ACCOUNT_FIELD[body.provider]
    foreign = [
        ErrorItem(["body", field], f"not a field of a {body.provider} connection", "extra")
        for field in ACCOUNT_FIELD.values()
        if field != account_field and getattr(body, field, None) is not None
    ]
    if foreign:
        raise ValidationFailed(foreign)
    return create_connection(
        session,
        workspace_id,
        body.provider,
        body.name,
        getattr(body, account_field) or "",
        {"auth_token": body.auth_token or ""},
    )


def list_connections(session: Session, workspace_id: str) -> list[ProviderConnection]:
    """The workspace's connections, oldest first."""
    return repository.list_connections(session, workspace_id)


def get_connection(session: Session, workspace_id: str, connection_id: str) -> ProviderConnection:
    """The workspace's connection, or 404."""
    row = repository.get_connection(session, workspace_id, connection_id)
    if row is None:
        raise NotFound(
            ["path", "connection_id"], f"provider connection '{connection_id}' not found"
        )
    return row


def delete_connection(session: Session, workspace_id: str, connection_id: str) -> None:
    """Delete a connection no phone number names; 409 while one does, 404 when there is none."""
    row = repository.get_connection(session, workspace_id, connection_id, lock="update")
    if row is None:
        raise NotFound(
            ["path", "connection_id"], f"provider connection '{connection_id}' not found"
        )
    if repository.is_referenced(session, workspace_id, connection_id):
        raise Conflict(
            ["path", "connection_id"],
            f"provider connection '{connection_id}' is the credentials_ref of a phone number: "
            "remove the number first",
        )
    repository.delete_connection(session, workspace_id, connection_id)
    provider, account_id = row.provider, row.account_id
    after_commit(session, lambda: accounts.forget(connection_id, provider, account_id))


def check_credentials_ref(
    session: Session, workspace_id: str, provider: str, credentials_ref: str
) -> None:
    """422 at ``credentials_ref`` unless it is ``default`` or a connection of the workspace
    at the same provider; the connection's row stays share-locked until the transaction ends,
    so it cannot be deleted while the number naming it is stored."""
    if credentials_ref == accounts.DEFAULT_REF:
        return
    row = repository.get_connection(session, workspace_id, credentials_ref, lock="share")
    if row is None:
        raise ValidationFailed.one(
            ["body", "credentials_ref"],
            f"no provider connection '{credentials_ref}' in this workspace "
            "('default' names the environment's account)",
            "unknown_connection",
        )
    if row.provider != provider:
        raise ValidationFailed.one(
            ["body", "credentials_ref"],
            f"provider connection '{credentials_ref}' is a {row.provider} account, not {provider}",
            "provider_mismatch",
        )


def connection_ids(session: Session) -> list[str]:
    """Every connection's id, of every workspace (what ``rotate_secret`` walks)."""
    return repository.connection_ids(session)


def rotate_secret(session: Session, connection_id: str) -> bool:
    """Re-encrypt one connection's secrets under the first key of ``SWITCHBOARD_SECRETS_KEY``
    (its row locked meanwhile); whether it still existed. The secrets themselves, and so
    every cached read of them, are unchanged."""
    secret = repository.lock_secret(session, connection_id)
    if secret is None:
        return False
    repository.store_secret(session, connection_id, rotate_token(secret))
    return True


def unreadable_connections(session: Session) -> list[tuple[str, str]]:
    """The connections whose secrets no configured key opens, each with the reason (all of
    them, with the reason, when there is no usable key)."""
    unreadable = []
    for connection_id, secret in repository.connection_secrets(session):
        try:
            decrypt_secrets(secret)
        except SecretsUnavailable as exc:
            unreadable.append((connection_id, exc.items[0].msg))
    return unreadable
