"""Provider connection bodies: a workspace's account at Twilio or Vobiz. Secrets go in, never
out: no response carries an auth token or a password."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.schemas.common import PhoneProvider
from shared.storable import OptionalText, Text


class ProviderConnectionCreate(BaseModel):
    provider: PhoneProvider = Field(
        description="twilio or vobiz (a sip_trunk's connection comes with its phone number's "
        "outbound_trunk_config)."
    )
    name: Text = Field(min_length=1, max_length=200, description="Unique in the workspace.")
    account_sid: OptionalText = Field(
        default=None, max_length=64, description="Twilio: the account SID (AC + 32 hex digits)."
    )
    auth_id: OptionalText = Field(default=None, max_length=200, description="Vobiz: the auth id.")
    auth_token: OptionalText = Field(
        default=None,
        max_length=500,
        description="The account's auth token (Twilio, Vobiz). Write-only: stored encrypted, "
        "never returned.",
    )


class ProviderConnectionResponse(BaseModel):
    id: str = Field(description="What a phone number's credentials_ref names.")
    provider: PhoneProvider
    name: str
    account_id: str = Field(
        description="The public account id: Twilio account SID, Vobiz auth id, SIP trunk address."
    )
    config: dict[str, Any] = Field(description="Settings that are not secret.")
    created_at_unix: int


class ProviderConnectionList(BaseModel):
    connections: list[ProviderConnectionResponse]
