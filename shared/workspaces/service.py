"""Workspaces and API keys."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy.orm import Session

from shared.errors import Unauthorized
from shared.workspaces import repository as repo

KEY_PREFIX = "sb_"


def hash_api_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, workspace_name: str) -> str:
    """A new API key for the workspace (created if missing); the plaintext is never stored."""
    workspace_id = repo.get_or_create_workspace(session, workspace_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    repo.insert_api_key(session, workspace_id, hash_api_key(key), key[:10])
    return key


def authenticate(session: Session, key: str | None) -> str:
    """The workspace id a presented API key belongs to."""
    if not key:
        raise Unauthorized("missing API key: send it in the x-api-key header")
    workspace_id = repo.workspace_id_for_key_hash(session, hash_api_key(key))
    if workspace_id is None:
        raise Unauthorized("invalid API key")
    return workspace_id
