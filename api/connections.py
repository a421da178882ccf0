"""Provider connections, under /v1/provider-connections: a workspace's Twilio and Vobiz
accounts, which its phone numbers name in ``credentials_ref``. Secrets are write-only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import SessionDep, WorkspaceDep
from api.responses import CONFLICT, error_responses
from shared.connections import service
from shared.models import ProviderConnection
from shared.schemas import (
    ProviderConnectionCreate,
    ProviderConnectionList,
    ProviderConnectionResponse,
)
from shared.timestamps import unix

router = APIRouter(tags=["provider-connections"])


def connection_response(row: ProviderConnection) -> ProviderConnectionResponse:
    """The API's view of a connection: never its secrets."""
    return ProviderConnectionResponse(
        id=row.id,
        provider=row.provider,  # type: ignore[arg-type]
        name=row.name,
        account_id=row.account_id,
        config=dict(row.config or {}),
        created_at_unix=unix(row.created_at),
    )


@router.post(
    "/provider-connections",
    status_code=201,
    response_model=ProviderConnectionResponse,
    responses={**CONFLICT, **error_responses(503)},
)
def create_connection(
    body: ProviderConnectionCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> ProviderConnectionResponse:
    """Store a Twilio (``account_sid``, ``auth_token``) or Vobiz (``auth_id``, ``auth_token``)
    account; the token is encrypted and never returned. 503 while the server has no
    ``SWITCHBOARD_SECRETS_KEY``."""
    return connection_response(service.create_from_request(session, workspace_id, body))


@router.get("/provider-connections", response_model=ProviderConnectionList)
def list_connections(session: SessionDep, workspace_id: WorkspaceDep) -> ProviderConnectionList:
    """The workspace's connections, oldest first (without their secrets)."""
    rows = service.list_connections(session, workspace_id)
    return ProviderConnectionList(connections=[connection_response(row) for row in rows])


@router.get("/provider-connections/{connection_id}", response_model=ProviderConnectionResponse)
def get_connection(
    connection_id: str, session: SessionDep, workspace_id: WorkspaceDep
) -> ProviderConnectionResponse:
    """One connection (without its secrets)."""
    return connection_response(service.get_connection(session, workspace_id, connection_id))


@router.delete("/provider-connections/{connection_id}", status_code=204, responses=CONFLICT)
def delete_connection(
    connection_id: str, session: SessionDep, workspace_id: WorkspaceDep
) -> Response:
    """Delete a connection; 409 while a phone number names it in ``credentials_ref``."""
    service.delete_connection(session, workspace_id, connection_id)
    return Response(status_code=204)
