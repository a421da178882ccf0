"""Tables. Postgres is the source of truth: every batch, call and counter lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    # sha256 of the key: keys are 256-bit random, so a fast hash is enough and lookups are O(1).
    key_hash: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    first_message: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    language: Mapped[str] = mapped_column(Text, nullable=False, server_default="en")
    llm: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    voice: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    # The call-bulk API's aiSettingsTemplateId: an AI settings template is an agent.
    template_id: Mapped[str] = mapped_column(
        Text, nullable=False, unique=True, server_default=text("gen_random_uuid()::text")
    )
    # What a call does when a machine answers (shared.voicemail.VoicemailBehavior), and the
    # message it leaves with leave_message (a template with the prompt's placeholders).
    voicemail_behavior: Mapped[str] = mapped_column(
        Text, nullable=False, server_default="connect_agent"
    )
    voicemail_message: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_agents_workspace_id_id", "workspace_id", "id"),)


class PhoneNumber(Base):
    __tablename__ = "phone_numbers"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    phone_number: Mapped[str] = mapped_column(Text, nullable=False)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    label: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    credentials_ref: Mapped[str] = mapped_column(Text, nullable=False, server_default="default")
    created_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("workspace_id", "phone_number"),)


class ProviderConnection(Base):
    """A workspace's account at a provider; phone numbers name it in ``credentials_ref``."""

    __tablename__ = "provider_connections"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # The account's public identifier (Twilio account SID, Vobiz auth id, trunk address).
    account_id: Mapped[str] = mapped_column(Text, nullable=False)
    # Fernet token of the JSON object of its secrets (shared/connections/); never returned.
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    # Settings that are not secret (a SIP trunk's transport, media encryption, headers).
    config: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("workspace_id", "name"),)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), nullable=False)
    phone_number_id: Mapped[str | None] = mapped_column(ForeignKey("phone_numbers.id"))
    phone_provider: Mapped[str | None] = mapped_column(Text)
    # The caller-ID pool, phone_number_id first; empty for a batch that places no calls.
    phone_number_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'")
    )
    status: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()
    scheduled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    whatsapp_params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    timezone: Mapped[str | None] = mapped_column(Text)
    telephony_call_config: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    target_concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    # The agent's templates as validated at submit, so a later edit of the agent cannot leave
    # an accepted batch with placeholders nobody supplied.
    prompt_template: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    first_message_template: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # The voicemail behaviour in effect (the submit's, else the agent's) and its message
    # template, fixed at submit like the prompt.
    voicemail_behavior: Mapped[str] = mapped_column(
        Text, nullable=False, server_default="connect_agent"
    )
    voicemail_message_template: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    total_calls_scheduled: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_calls_dispatched: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_calls_finished: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Not in the API: how many recipients the batch has and how many reached any final state
    # (finished or cancelled). The batch completes in the transaction where they become equal.
    total_recipients: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    calls_final: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    retry_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    calling_window: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Set while the batch is paused: nothing is claimed for dialing until it is cleared.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why, while paused_at is set: "manual" (the pause endpoint) or "provider_unreachable".
    paused_reason: Mapped[str | None] = mapped_column(Text)
    # The first of the batch's current run of dials the provider did not process; cleared by
    # a dial it accepts and by resume (shared/provider_outage.py).
    first_unreachable_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # call-bulk's batchSize: dial messages are published in pipelined chunks of this many
    # (SWITCHBOARD_FAN_OUT_CHUNK_SIZE when null).
    fan_out_chunk_size: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        # Lists a workspace's batches, and lets calls reference (workspace_id, id).
        UniqueConstraint("workspace_id", "id"),
        Index(
            "ix_batches_pending_scheduled_at",
            "scheduled_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_batches_in_progress", "id", postgresql_where=text("status = 'in_progress'")),
    )


class Call(Base):
    """One recipient of a batch and the state of its call."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    # (workspace_id, batch_id) references the batch: a call's workspace is its batch's.
    batch_id: Mapped[str] = mapped_column(Text, nullable=False)
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    recipient_id: Mapped[str] = mapped_column(Text, nullable=False)
    phone_number: Mapped[str | None] = mapped_column(Text)
    whatsapp_user_id: Mapped[str | None] = mapped_column(Text)
    client_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    outcome: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    due_at: Mapped[datetime] = _now()
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[str | None] = mapped_column(Text)
    # When the tick last asked the provider about this call (throttles reconciliation).
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_call_sid: Mapped[str | None] = mapped_column(Text)
    # The caller number of the batch's pool that the latest accepted attempt was placed from.
    caller_number: Mapped[str | None] = mapped_column(Text)
    provider_status: Mapped[str | None] = mapped_column(Text)
    # Set once, the first time any attempt of this recipient is accepted by the provider; the
    # dispatched counter moves in the same transaction, so it moves once per recipient.
    first_dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    rendered_prompt: Mapped[str | None] = mapped_column(Text)
    rendered_first_message: Mapped[str | None] = mapped_column(Text)
    rendered_override: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The current attempt's answering machine detection verdict (Twilio's AnsweredBy), and
    # what was done about a machine: hung_up, message_left (NULL: nothing).
    answered_by: Mapped[str | None] = mapped_column(Text)
    voicemail_action: Mapped[str | None] = mapped_column(Text)
    # One entry per ended attempt: attempt, provider_call_sid, status, outcome, duration_s,
    # ended_at_unix.
    attempt_history: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default="[]"
    )
    # Set for calls made through call-bulk: the contact called and its metadata, which webhooks
    # carry as requestMetadata and which never reaches the prompt.
    contact_id: Mapped[str | None] = mapped_column(ForeignKey("contacts.id"))
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("batch_id", "position"),
        ForeignKeyConstraint(["workspace_id", "batch_id"], ["batches.workspace_id", "batches.id"]),
        Index(
            "ix_calls_provider_call_sid",
            "provider_call_sid",
            postgresql_where=text("provider_call_sid IS NOT NULL"),
        ),
        Index("ix_calls_pending_due_at", "due_at", postgresql_where=text("status = 'pending'")),
        Index(
            "ix_calls_live_updated_at",
            "updated_at",
            postgresql_where=text(
                "status IN ('dialing', 'dispatched', 'initiated', 'in_progress')"
            ),
        ),
    )


class DialLog(Base):
    """One provider-accepted dial attempt to a number, for the per-number frequency cap."""

    __tablename__ = "dial_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    phone_number: Mapped[str] = mapped_column(Text, nullable=False)
    dialed_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_dial_log_workspace_id_phone_number", "workspace_id", "phone_number", "dialed_at"),
    )


class DncNumber(Base):
    """A number a workspace must never call."""

    __tablename__ = "dnc_numbers"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    phone_number: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = _now()


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # Deferred: the key is claimed first, before the batch row it names is inserted.
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", deferrable=True, initially="DEFERRED"), nullable=False
    )
    created_at: Mapped[datetime] = _now()


class Contact(Base):
    """A workspace's contact book entry, keyed by E.164 number."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    phone_number: Mapped[str] = mapped_column(Text, nullable=False)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("workspace_id", "phone_number"),)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _now()


class WebhookDelivery(Base):
    """One event for one endpoint: written in the transaction of the change that causes it."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), nullable=False)
    event_id: Mapped[str] = mapped_column(Text, nullable=False)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # pending → delivered (a 2xx) or failed (still not delivered when the retry window closed)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_webhook_deliveries_workspace_id_id", "workspace_id", "id"),
        Index(
            "ix_webhook_deliveries_pending_next_attempt_at",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )


__all__ = [
    "Agent",
    "ApiKey",
    "Base",
    "Batch",
    "Call",
    "Contact",
    "DialLog",
    "DncNumber",
    "IdempotencyKey",
    "PhoneNumber",
    "WebhookDelivery",
    "WebhookEndpoint",
    "Workspace",
]


class StatusInboxReport(Base):
    """A status report the API acknowledged to the provider: written before the answer, deleted
    by the transaction that applies it, published again by the tick while it stays."""

    __tablename__ = "status_inbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(Text, nullable=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[datetime] = _now()
    # When a message carrying it was last published (by the API, then by each re-drive).
    published_at: Mapped[datetime] = _now()
    redrives: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
