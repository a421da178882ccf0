"""Request dependencies: the transaction every route runs in, and the caller's workspace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shared.db import transaction
from shared.errors import ErrorItem, ValidationFailed
from shared.storable import text_problem
from shared.workspaces.service import authenticate


def _db_session(request: Request) -> Iterator[Session]:
    # A GET only reads: all its statements see one snapshot, so what it answers is consistent
    # (a batch's counters agree with its recipients' statuses).
    with transaction(snapshot=request.method in ("GET", "HEAD")) as session:
        yield session


# scope="function": the transaction commits (and its messages are published) before the
# response is sent, so a client never sees success for something that was not stored.
SessionDep = Annotated[Session, Depends(_db_session, scope="function")]


# The three ways to send the API key, as security schemes: the OpenAPI document lists them and
# applies them to every route that takes a key (and its docs page gets an Authorize button).
# None of them refuses by itself; ``authenticate`` answers the 401.
_X_API_KEY = APIKeyHeader(name="x-api-key", scheme_name="x-api-key", auto_error=False)
_XI_API_KEY = APIKeyHeader(
    name="xi-api-key",
    scheme_name="xi-api-key",
    description="The header the ElevenLabs SDK sends",
    auto_error=False,
)
_BEARER = HTTPBearer(
    scheme_name="bearer", description="Authorization: Bearer <API key>", auto_error=False
)


def authenticated_workspace_id(
    session: SessionDep,
    x_api_key: Annotated[str | None, Security(_X_API_KEY)],
    xi_api_key: Annotated[str | None, Security(_XI_API_KEY)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> str:
    """The workspace of the API key the request sends, in any of the three ways."""
    key = x_api_key or xi_api_key or (bearer.credentials.strip() if bearer else None)
    return authenticate(session, key)


WorkspaceDep = Annotated[str, Depends(authenticated_workspace_id)]


def storable_parameters(request: Request) -> None:
    """Path and query values reach queries as text: one holding NUL or a lone surrogate is a 422
    naming it, before any route runs (never a database error, nor a 404 for what cannot exist)."""
    sources = (("path", request.path_params.items()), ("query", request.query_params.multi_items()))
    items = [
        ErrorItem([source, name], problem.msg, problem.kind)
        for source, params in sources
        for name, value in params
        if (problem := text_problem(name) or text_problem(str(value))) is not None
    ]
    if items:
        raise ValidationFailed(items)
