"""Request dependencies: the transaction every route runs in, and the caller's workspace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from shared.db import transaction
from shared.services.workspaces import authenticate


def _db_session() -> Iterator[Session]:
    with transaction() as session:
        yield session


# scope="function": the transaction commits (and its messages are published) before the
# response is sent, so a client never sees success for something that was not stored.
SessionDep = Annotated[Session, Depends(_db_session, scope="function")]


def _workspace_id(
    session: SessionDep,
    x_api_key: Annotated[str | None, Header(description="API key")] = None,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    xi_api_key: Annotated[
        str | None, Header(description="API key, as the ElevenLabs SDK sends it")
    ] = None,
) -> str:
    key = x_api_key or xi_api_key
    if not key and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    return authenticate(session, key)


WorkspaceDep = Annotated[str, Depends(_workspace_id)]
