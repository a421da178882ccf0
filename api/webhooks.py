"""Webhook endpoints and their deliveries, under /v1/voiceai/webhooks and /v1/convai/webhooks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api.deps import SessionDep, WorkspaceDep
from shared.schemas import (
    WebhookDeliveryList,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
)
from shared.webhooks import endpoints as service

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks", status_code=201, response_model=WebhookEndpointCreated)
def create_endpoint(
    body: WebhookEndpointCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> WebhookEndpointCreated:
    """Send signed ``call.ended`` and/or ``batch.completed`` events to ``url``. The secret
    that signs them is returned here only."""
    return service.create_endpoint(session, workspace_id, body)


@router.get("/webhooks", response_model=WebhookEndpointList)
def list_endpoints(session: SessionDep, workspace_id: WorkspaceDep) -> WebhookEndpointList:
    """The workspace's endpoints (without their secrets)."""
    return WebhookEndpointList(webhooks=service.list_endpoints(session, workspace_id))


@router.delete("/webhooks/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Stop sending to the endpoint; its undelivered events end failed."""
    service.delete_endpoint(session, workspace_id, endpoint_id)
    return Response(status_code=204)


@router.get("/webhooks/deliveries", response_model=WebhookDeliveryList)
def list_deliveries(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_doc: str | None = None,
    status: Literal["pending", "delivered", "failed"] | None = None,
) -> WebhookDeliveryList:
    """Deliveries newest first, with their attempts and last error; page with ``next_doc``."""
    deliveries, has_more = service.list_deliveries(session, workspace_id, limit, last_doc, status)
    return WebhookDeliveryList(
        deliveries=deliveries,
        next_doc=deliveries[-1].id if has_more and deliveries else None,
        has_more=has_more,
    )
