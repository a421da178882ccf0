"""Call-bulk bodies: many contacts called with one AI settings template."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shared.schemas.common import MAX_VOICEMAIL_MESSAGE, BatchStatus, Integer
from shared.storable import FreeJsonObject, OptionalText, PromptTags, Text
from shared.voicemail import VoicemailBehavior


class BulkContact(BaseModel):
    """One contact of a call-bulk request."""

    model_config = ConfigDict(populate_by_name=True)

    number_to_call: Text = Field(alias="numberToCall", min_length=1, max_length=64)
    first_name: OptionalText = Field(default=None, alias="firstName", max_length=200)
    last_name: OptionalText = Field(default=None, alias="lastName", max_length=200)
    email: OptionalText = Field(default=None, max_length=320)
    metadata: FreeJsonObject | None = Field(
        default=None, description="Stored on the call (request_metadata); never in the prompt."
    )
    prompt_tags: PromptTags | None = Field(
        default=None,
        alias="promptTags",
        description="Values for the {{key}} / <<key>> placeholders of the template's prompt.",
    )


class CallBulkRequest(BaseModel):
    """Call many contacts with one AI settings template."""

    model_config = ConfigDict(populate_by_name=True)

    contacts: list[BulkContact] = Field(min_length=1, max_length=10_000)
    ai_settings_template_id: UUID | None = Field(default=None, alias="aiSettingsTemplateId")
    update_existing: StrictBool = Field(default=False, alias="updateExisting")
    country_code: str | None = Field(
        default=None,
        alias="countryCode",
        min_length=2,
        max_length=2,
        pattern=r"^[A-Z]{2}$",
        description="ISO 3166-1 alpha-2 region code to parse local numbers.",
    )
    batch_size: Integer | None = Field(
        default=None,
        alias="batchSize",
        ge=10,
        le=1000,
        description="Dial messages are published to the workers in chunks of this many "
        "(default SWITCHBOARD_FAN_OUT_CHUNK_SIZE).",
    )
    voicemail_behavior: VoicemailBehavior | None = Field(
        default=None,
        alias="voicemailBehavior",
        description="What a call does when a machine answers, instead of the template's.",
    )
    voicemail_message: OptionalText = Field(
        default=None,
        alias="voicemailMessage",
        max_length=MAX_VOICEMAIL_MESSAGE,
        description="The message leave_message plays, instead of the template's; its tags are "
        "filled from each contact's promptTags.",
    )


class CallBulkResponse(BaseModel):
    batch_id: str
    call_ids: list[str] = Field(description="One call per contact, in request order.")
    status: BatchStatus
