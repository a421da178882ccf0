"""Workspaces and their API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.models import ApiKey, Workspace


def get_or_create_workspace(session: Session, name: str) -> str:
    """The id of the workspace called ``name``, created if missing."""
    stmt = (
        insert(Workspace)
        .values(id=new_id("ws"), name=name)
        .on_conflict_do_nothing(index_elements=[Workspace.name])
    )
    session.execute(stmt)
    return session.execute(select(Workspace.id).where(Workspace.name == name)).scalar_one()


def insert_api_key(session: Session, workspace_id: str, key_hash: str, prefix: str) -> None:
    """Store a key's hash (never the key itself)."""
    session.add(
        ApiKey(id=new_id("key"), workspace_id=workspace_id, key_hash=key_hash, prefix=prefix)
    )
    session.flush()


def workspace_id_for_key_hash(session: Session, key_hash: str) -> str | None:
    """The workspace an unrevoked key belongs to."""
    return session.execute(
        select(ApiKey.workspace_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
