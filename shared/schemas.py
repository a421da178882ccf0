"""Request and response bodies, field for field as the seed API documents them (plus the
ElevenLabs batch-calling extras: timezone, telephony_call_config, target_concurrency_limit)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    UrlConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from shared.storable import (
    MAX_URL_CHARS,
    FreeJson,
    FreeJsonObject,
    OptionalText,
    PromptTags,
    Text,
    Variables,
)
from shared.voicemail import DEFAULT_BEHAVIOR, VoicemailBehavior

BatchStatus = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
RecipientStatus = Literal[
    "pending",
    "dispatched",
    "initiated",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
    "voicemail",
]
PhoneProvider = Literal["twilio", "vobiz", "sip_trunk"]
PausedReason = Literal["manual", "provider_unreachable"]


def _not_a_bool(kind: str) -> BeforeValidator:
    # A JSON true/false would otherwise be taken as 1/0 (pydantic's lax mode reads a bool as a
    # number); a form field's "5" is still read as 5.
    def check(value: object) -> object:
        if isinstance(value, bool):
            raise PydanticCustomError(f"{kind}_type", "Input should be a number, not a boolean")
        return value

    return BeforeValidator(check)


# A number a client sends: a JSON number (or a numeric string), never a boolean.
VoiceNumber = Annotated[float, _not_a_bool("float")]
Integer = Annotated[int, _not_a_bool("int")]


class _Open(BaseModel):
    """Client-supplied configuration: unknown keys are kept and passed on, not rejected."""

    model_config = ConfigDict(extra="allow")
    # The unknown keys' values are stored and passed on: storable text, bounded in size.
    __pydantic_extra__: dict[str, FreeJson] = Field(init=False)


class SoftTimeoutConfig(_Open):
    message: OptionalText = None


class TurnOverride(_Open):
    soft_timeout_config: SoftTimeoutConfig | None = None


class TtsOverride(_Open):
    voice_id: OptionalText = None
    stability: VoiceNumber | None = None
    speed: VoiceNumber | None = None
    similarity_boost: VoiceNumber | None = None


class ConversationOverride(_Open):
    text_only: bool | None = None


class PromptOverride(_Open):
    prompt: OptionalText = None
    llm: OptionalText = None
    native_mcp_server_ids: list[Text] | None = None


class AgentOverride(_Open):
    first_message: OptionalText = None
    language: OptionalText = None
    prompt: PromptOverride | None = None


class ConversationConfigOverride(_Open):
    turn: TurnOverride | None = None
    tts: TtsOverride | None = None
    conversation: ConversationOverride | None = None
    agent: AgentOverride | None = None


class SourceInfo(_Open):
    source: OptionalText = "unknown"
    version: OptionalText = None


class ConversationInitiationClientData(_Open):
    conversation_config_override: ConversationConfigOverride | None = None
    custom_llm_extra_body: FreeJsonObject | None = None
    user_id: OptionalText = None
    source_info: SourceInfo | None = None
    dynamic_variables: Variables = Field(default_factory=dict)


class OutboundCallRecipient(BaseModel):
    id: OptionalText = Field(default=None, max_length=200)
    phone_number: OptionalText = Field(default=None, max_length=64)
    whatsapp_user_id: OptionalText = Field(default=None, max_length=200)
    conversation_initiation_client_data: ConversationInitiationClientData | None = None


class BatchCallWhatsAppParams(BaseModel):
    whatsapp_call_permission_request_template_name: OptionalText = None
    whatsapp_call_permission_request_template_language_code: OptionalText = None
    whatsapp_phone_number_id: OptionalText = None


class TelephonyCallConfig(_Open):
    ringing_timeout_secs: Integer | None = Field(default=None, ge=5, le=600)


class TelephonyCallConfigResponse(_Open):
    """The batch's telephony settings as calls use them: its own, or the defaults."""

    ringing_timeout_secs: int


RetryableOutcome = Literal["busy", "no_answer", "failed", "voicemail"]


def _default_retry_on() -> list[RetryableOutcome]:
    return ["busy", "no_answer"]


class RetryPolicy(BaseModel):
    """How often each recipient is dialed, and after which outcomes it is dialed again."""

    max_attempts: Integer = Field(default=1, ge=1, le=10)
    retry_on: list[RetryableOutcome] = Field(default_factory=_default_retry_on)
    delays_s: list[Integer] = Field(
        default_factory=lambda: [300],
        min_length=1,
        max_length=9,
        description="Seconds before attempt 2, 3, ...; the last value repeats.",
    )

    @field_validator("delays_s")
    @classmethod
    def _non_negative(cls, delays: list[int]) -> list[int]:
        if any(d < 0 or d > 7 * 86_400 for d in delays):
            raise ValueError("each delay must be between 0 and 604800 seconds")
        return delays


CLOCK = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$|^24:00$"


class CallingWindowSpec(BaseModel):
    """When calls may start, in each recipient's local time unless ``timezone`` is given."""

    start: str = Field(pattern=CLOCK, examples=["09:00"])
    end: str = Field(pattern=CLOCK, examples=["20:00"])
    days: list[Integer] = Field(
        default_factory=lambda: list(range(7)),
        min_length=1,
        max_length=7,
        description="Days of the week calls may start on, 0 = Monday.",
    )
    timezone: OptionalText = None
    override_default_window: bool = Field(
        default=False, description="Allow calls outside the workspace's default window."
    )

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in days):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return sorted(set(days))


MAX_CALLER_POOL = 50
MAX_VOICEMAIL_MESSAGE = 10_000
# 9999-12-31T23:59:59Z, the last second a stored timestamp can hold.
MAX_UNIX_TIME = 253_402_300_799
# The largest integer a stored (32-bit) integer column holds.
MAX_STORED_INT = 2**31 - 1


class SubmitBatchRequest(BaseModel):
    """Request model for submitting a batch call job."""

    call_name: Text = Field(min_length=1, max_length=500)
    agent_id: Text
    recipients: list[OutboundCallRecipient] = Field(min_length=1, max_length=10_000)
    # Unix seconds from 1970 up to the last second of year 9999 (what a timestamp can hold).
    scheduled_time_unix: Integer | None = Field(default=None, ge=0, le=MAX_UNIX_TIME)
    agent_phone_number_id: OptionalText = None
    agent_phone_number_ids: list[Text] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CALLER_POOL,
        description="A caller-ID pool: calls rotate across these numbers, each at its own pace "
        "(after agent_phone_number_id when both are given).",
    )
    whatsapp_params: BatchCallWhatsAppParams | None = None
    timezone: OptionalText = None
    telephony_call_config: TelephonyCallConfig | None = None
    target_concurrency_limit: Integer | None = Field(default=None, ge=1, le=MAX_STORED_INT)
    retry_policy: RetryPolicy | None = None
    calling_window: CallingWindowSpec | None = None
    voicemail_behavior: VoicemailBehavior | None = Field(
        default=None,
        description="What a call does when a machine answers, instead of the agent's setting.",
    )
    voicemail_message: OptionalText = Field(
        default=None,
        max_length=MAX_VOICEMAIL_MESSAGE,
        description="The message leave_message plays, instead of the agent's; the same "
        "{{key}} / <<key>> tags as the prompt, filled from each recipient's dynamic variables.",
    )


class BatchResponse(BaseModel):
    """Response model for a single batch call job."""

    id: str
    name: str
    agent_id: str
    created_at_unix: int
    scheduled_time_unix: int
    last_updated_at_unix: int
    status: BatchStatus
    agent_name: str
    phone_number_id: str | None = None
    phone_number_ids: list[str] = Field(default_factory=list)
    phone_provider: PhoneProvider | None = None
    whatsapp_params: BatchCallWhatsAppParams | None = None
    total_calls_dispatched: int = 0
    total_calls_scheduled: int = 0
    total_calls_finished: int = 0
    retry_count: int = 0
    timezone: str | None = None
    telephony_call_config: TelephonyCallConfigResponse
    target_concurrency_limit: int | None = None
    retry_policy: RetryPolicy | None = None
    calling_window: CallingWindowSpec | None = None
    voicemail_behavior: VoicemailBehavior = DEFAULT_BEHAVIOR
    voicemail_message: str = ""
    paused: bool = False
    # Why a paused batch is paused ("manual": the pause endpoint; "provider_unreachable": no
    # dial of it was processed by the provider for too long); null while it is not paused.
    paused_reason: PausedReason | None = None


class AttemptResponse(BaseModel):
    attempt: int
    provider_call_sid: str | None = None
    outcome: str | None = None
    duration_s: int | None = None
    ended_at_unix: int


class RecipientResponse(BaseModel):
    id: str
    phone_number: str | None = None
    whatsapp_user_id: str | None = None
    status: RecipientStatus
    outcome: str | None = None
    attempts: int = 0
    created_at_unix: int
    updated_at_unix: int
    conversation_id: str | None = None
    provider_call_sid: str | None = None
    caller_number: str | None = None
    conversation_initiation_client_data: dict[str, Any] | None = None
    attempt_history: list[AttemptResponse] = Field(default_factory=list)


class BatchDetailResponse(BatchResponse):
    recipients: list[RecipientResponse] = Field(default_factory=list)


class BatchListResponse(BaseModel):
    batch_calls: list[BatchResponse]
    next_doc: str | None = None
    has_more: bool = False


class DashboardBatch(BaseModel):
    """One batch as the dashboard shows it: its counters and its recipients counted by status."""

    id: str
    name: str
    status: BatchStatus
    paused: bool = False
    paused_reason: PausedReason | None = None
    created_at_unix: int
    total_calls_scheduled: int
    total_calls_dispatched: int
    total_calls_finished: int
    retry_count: int
    total_recipients: int
    final_recipients: int
    recipients_by_status: dict[RecipientStatus, int]


class DashboardResponse(BaseModel):
    batches: list[DashboardBatch]


class VoiceSettings(_Open):
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


class ContactResponse(BaseModel):
    id: str
    phone_number: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    created_at_unix: int
    updated_at_unix: int


class ContactCallResponse(BaseModel):
    call_id: str
    batch_id: str
    status: RecipientStatus
    outcome: str | None = None
    attempts: int = 0
    provider_call_sid: str | None = None
    created_at_unix: int
    updated_at_unix: int
    request_metadata: dict[str, Any] | None = None


class ContactDetailResponse(ContactResponse):
    calls: list[ContactCallResponse] = Field(default_factory=list)


class ContactListResponse(BaseModel):
    contacts: list[ContactResponse]
    next_doc: str | None = None
    has_more: bool = False


class PhoneNumberCreate(BaseModel):
    phone_number: Text = Field(max_length=64)
    provider: PhoneProvider = "twilio"
    label: Text = Field(default="", max_length=200)
    credentials_ref: Text = Field(default="default", max_length=200)


class PhoneNumberResponse(BaseModel):
    phone_number_id: str
    phone_number: str
    provider: PhoneProvider
    label: str
    credentials_ref: str
    created_at_unix: int


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
