"""Batch-calling bodies: the submitted batch (recipients, overrides, retry policy, calling
window) and the batch, recipient and dashboard views."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from shared.schemas.common import (
    MAX_VOICEMAIL_MESSAGE,
    BatchStatus,
    Integer,
    OpenModel,
    PausedReason,
    PhoneProvider,
    RecipientStatus,
    VoiceNumber,
)
from shared.storable import FreeJsonObject, OptionalText, Text, Variables
from shared.voicemail import DEFAULT_BEHAVIOR, VoicemailBehavior


class SoftTimeoutConfig(OpenModel):
    message: OptionalText = None


class TurnOverride(OpenModel):
    soft_timeout_config: SoftTimeoutConfig | None = None


class TtsOverride(OpenModel):
    voice_id: OptionalText = None
    stability: VoiceNumber | None = None
    speed: VoiceNumber | None = None
    similarity_boost: VoiceNumber | None = None


class ConversationOverride(OpenModel):
    text_only: bool | None = None


class PromptOverride(OpenModel):
    prompt: OptionalText = None
    llm: OptionalText = None
    native_mcp_server_ids: list[Text] | None = None


class AgentOverride(OpenModel):
    first_message: OptionalText = None
    language: OptionalText = None
    prompt: PromptOverride | None = None


class ConversationConfigOverride(OpenModel):
    turn: TurnOverride | None = None
    tts: TtsOverride | None = None
    conversation: ConversationOverride | None = None
    agent: AgentOverride | None = None


class SourceInfo(OpenModel):
    source: OptionalText = "unknown"
    version: OptionalText = None


class ConversationInitiationClientData(OpenModel):
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


class TelephonyCallConfig(OpenModel):
    ringing_timeout_secs: Integer | None = Field(default=None, ge=5, le=600)


class TelephonyCallConfigResponse(OpenModel):
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
