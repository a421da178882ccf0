"""Webhook endpoints (registered, listed, deleted) and the listing of their deliveries."""

from __future__ import annotations

import secrets
import time

from sqlalchemy.orm import Session

from shared.errors import NotFound, ValidationFailed
from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEndpoint
from shared.schemas import (
    WebhookDeliveryResponse,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointResponse,
)
from shared.timestamps import unix, unix_or_none
from shared.webhooks import repository as webhooks_repo
from shared.webhooks.destinations import forbidden_destination


def _endpoint_response(row: WebhookEndpoint) -> WebhookEndpointResponse:
    return WebhookEndpointResponse(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        created_at_unix=unix(row.created_at),
    )


def create_endpoint(
    session: Session, workspace_id: str, body: WebhookEndpointCreate
) -> WebhookEndpointCreated:
    """Register an endpoint; its secret is returned here only."""
    refused = forbidden_destination(str(body.url))
    if refused is not None:
        raise ValidationFailed.one(["body", "url"], refused, "forbidden_destination")
    endpoint_id = new_id("whk")
    secret = body.secret or "whsec_" + secrets.token_hex(24)
    event_types: list[str] = sorted(set(body.event_types))
    webhooks_repo.insert_endpoint(
        session,
        {
            "id": endpoint_id,
            "workspace_id": workspace_id,
            "url": str(body.url),
            "secret": secret,
            "event_types": event_types,
        },
    )
    session.flush()
    return WebhookEndpointCreated(
        id=endpoint_id,
        url=str(body.url),
        event_types=event_types,
        created_at_unix=int(time.time()),
        secret=secret,
    )


def list_endpoints(session: Session, workspace_id: str) -> list[WebhookEndpointResponse]:
    return [_endpoint_response(row) for row in webhooks_repo.list_endpoints(session, workspace_id)]


def delete_endpoint(session: Session, workspace_id: str, endpoint_id: str) -> None:
    if not webhooks_repo.disable_endpoint(session, workspace_id, endpoint_id):
        raise NotFound(["path", "endpoint_id"], f"webhook endpoint '{endpoint_id}' not found")


def _delivery_response(row: WebhookDelivery) -> WebhookDeliveryResponse:
    return WebhookDeliveryResponse(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at_unix=unix(row.created_at),
        next_attempt_at_unix=unix_or_none(row.next_attempt_at) if row.status == "pending" else None,
        delivered_at_unix=unix_or_none(row.delivered_at),
        payload=row.payload,
    )


def list_deliveries(
    session: Session, workspace_id: str, limit: int, last_doc: str | None, status: str | None
) -> tuple[list[WebhookDeliveryResponse], bool]:
    """A page of deliveries, newest first, and whether more follow."""
    rows = webhooks_repo.list_deliveries(session, workspace_id, limit + 1, last_doc, status)
    return [_delivery_response(row) for row in rows[:limit]], len(rows) > limit
