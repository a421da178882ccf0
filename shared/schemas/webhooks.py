"""Webhook endpoint and delivery bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, UrlConstraints

from shared.storable import MAX_URL_CHARS, OptionalText

# batch.paused (a batch paused, manually or because its provider was unreachable) is sent
# only to endpoints that list it.
WebhookEventType = Literal["call.ended", "batch.completed", "batch.paused"]


class WebhookEndpointCreate(BaseModel):
    url: Annotated[AnyHttpUrl, UrlConstraints(max_length=MAX_URL_CHARS)]
    event_types: list[WebhookEventType] = Field(
        default=["call.ended", "batch.completed"], min_length=1
    )
    secret: OptionalText = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="The HMAC key deliveries are signed with; generated when omitted.",
    )


class WebhookEndpointResponse(BaseModel):
    id: str
    url: str
    event_types: list[str]
    created_at_unix: int


class WebhookEndpointCreated(WebhookEndpointResponse):
    secret: str


class WebhookEndpointList(BaseModel):
    webhooks: list[WebhookEndpointResponse]


class WebhookDeliveryResponse(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    created_at_unix: int
    next_attempt_at_unix: int | None = None
    delivered_at_unix: int | None = None
    payload: dict[str, Any]


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryResponse]
    next_doc: str | None = None
    has_more: bool = False
