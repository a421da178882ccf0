"""Agent, AI settings template and phone number bodies, and the configuration the voice-agent
runtime reads for one call."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from shared.schemas.common import MAX_VOICEMAIL_MESSAGE, OpenModel, PhoneProvider, VoiceNumber
from shared.schemas.trunks import OutboundTrunkConfig, OutboundTrunkConfigResponse
from shared.storable import OptionalText, Text
from shared.voicemail import DEFAULT_BEHAVIOR, VoicemailBehavior


class VoiceSettings(OpenModel):
    voice_id: OptionalText = None
    stability: VoiceNumber | None = Field(default=None, ge=0, le=1)
    speed: VoiceNumber | None = Field(default=None, gt=0, le=4)
    similarity_boost: VoiceNumber | None = Field(default=None, ge=0, le=1)


class AgentCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=200)
    prompt: Text = Field(default="", max_length=100_000)
    first_message: Text = Field(default="", max_length=10_000)
    language: Text = Field(default="en", max_length=20)
    llm: Text = Field(default="", max_length=100)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    voicemail_behavior: VoicemailBehavior = Field(
        default=DEFAULT_BEHAVIOR,
        description="When a machine answers: hang_up, leave_message (play voicemail_message "
        "once the greeting ends, then hang up) or connect_agent (the agent talks to it).",
    )
    voicemail_message: Text = Field(
        default="",
        max_length=MAX_VOICEMAIL_MESSAGE,
        description="The message leave_message plays, with the prompt's {{key}} / <<key>> tags.",
    )


class AgentUpdate(BaseModel):
    """The fields to change; a field left out is unchanged, and none may be set to null."""

    name: OptionalText = Field(default=None, min_length=1, max_length=200)
    prompt: OptionalText = Field(default=None, max_length=100_000)
    first_message: OptionalText = Field(default=None, max_length=10_000)
    language: OptionalText = Field(default=None, max_length=20)
    llm: OptionalText = Field(default=None, max_length=100)
    voice: VoiceSettings | None = None
    voicemail_behavior: VoicemailBehavior | None = None
    voicemail_message: OptionalText = Field(default=None, max_length=MAX_VOICEMAIL_MESSAGE)

    @field_validator(
        "name",
        "prompt",
        "first_message",
        "language",
        "llm",
        "voicemail_behavior",
        "voicemail_message",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Called only for a value given: an explicit null cannot be stored.
        if value is None:
            raise ValueError("may not be null; leave the field out to keep it")
        return value


class AgentResponse(BaseModel):
    agent_id: str
    name: str
    prompt: str
    first_message: str
    language: str
    llm: str
    voice: dict[str, Any]
    voicemail_behavior: VoicemailBehavior
    voicemail_message: str
    ai_settings_template_id: str = Field(
        description="The id call-bulk's aiSettingsTemplateId names this agent by."
    )
    created_at_unix: int
    updated_at_unix: int


class AgentListResponse(BaseModel):
    agents: list[AgentResponse]
    next_cursor: str | None = None
    has_more: bool = False


class SettingsTemplateResponse(AgentResponse):
    """An AI settings template: an agent, named by its template id."""

    id: str


class SettingsTemplateListResponse(BaseModel):
    templates: list[SettingsTemplateResponse]
    next_cursor: str | None = None
    has_more: bool = False


class PhoneNumberCreate(BaseModel):
    phone_number: Text = Field(max_length=64)
    provider: PhoneProvider = "twilio"
    label: Text = Field(default="", max_length=200)
    credentials_ref: Text = Field(default="default", max_length=200)
    outbound_trunk_config: OutboundTrunkConfig | None = Field(
        default=None,
        description="A sip_trunk number's outbound trunk (required for one, refused for the "
        "others); its credentials are write-only.",
    )


class PhoneNumberResponse(BaseModel):
    phone_number_id: str
    phone_number: str
    provider: PhoneProvider
    label: str
    credentials_ref: str
    created_at_unix: int
    outbound_trunk_config: OutboundTrunkConfigResponse | None = None


class AgentConfigResponse(BaseModel):
    """What the voice-agent runtime needs to hold one call's conversation."""

    call_id: str
    batch_id: str
    agent_id: str
    prompt: str
    first_message: str
    language: str
    llm: str
    voice: dict[str, Any]
    dynamic_variables: dict[str, Any]
    conversation_config_override: dict[str, Any] | None = None
