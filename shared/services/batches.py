"""Batches: submit, read, start, and the periodic tick that keeps every batch moving."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import Row
from sqlalchemy.orm import Session

from shared import messaging, slots
from shared.db import after_commit
from shared.errors import Conflict, ErrorItem, Loc, NotFound, ValidationFailed
from shared.ids import new_id, new_ids
from shared.lifecycle import plans, store, transitions
from shared.lifecycle.plans import Control, ControlPlan
from shared.lifecycle.states import BATCH_OPEN, BatchStatus, CallStatus, Outcome, public_status
from shared.models import Agent, PhoneNumber
from shared.phones import InvalidPhoneNumber, is_known_region, normalize_e164
from shared.provider_outage import PAUSED_MANUALLY
from shared.repositories import agents as agents_repo
from shared.repositories import batches as batches_repo
from shared.repositories import calls as calls_repo
from shared.repositories import contacts as contacts_repo
from shared.repositories import dnc as dnc_repo
from shared.repositories import phone_numbers as numbers_repo
from shared.repositories import webhooks as webhooks_repo
from shared.schemas import (
    BatchDetailResponse,
    BatchResponse,
    CallBulkRequest,
    CallBulkResponse,
    DashboardBatch,
    DashboardResponse,
    OutboundCallRecipient,
    PausedReason,
    RecipientResponse,
    SubmitBatchRequest,
    TelephonyCallConfigResponse,
)
from shared.services import webhooks
from shared.services.agents import check_voicemail_message
from shared.services.calls import (
    DIAL_FENCE_S,
    Transaction,
    audit_slots,
    hang_up_call,
    restore_slots,
    ringing_timeout_s,
)
from shared.services.status_inbox import redrive_status_inbox
from shared.settings import get_settings
from shared.templates import placeholders, placeholders_in
from shared.timestamps import unix
from shared.voicemail import VoicemailBehavior
from shared.windows import CallingWindow

log = logging.getLogger(__name__)

# A rejected 10,000-recipient batch should say what is wrong, not return megabytes.
MAX_ERROR_ITEMS = 200
DIALABLE_PROVIDERS = frozenset({"twilio"})


def request_fingerprint(body: BaseModel) -> str:
    """A hash of the request, to tell a retried submit from a different one under one key."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _needed_tags(
    recipient: OutboundCallRecipient, prompt_tags: set[str], first_message_tags: set[str]
) -> set[str]:
    """The placeholders a recipient must supply: the agent's, as overridden, and the override's."""
    data = recipient.conversation_initiation_client_data
    override = data.conversation_config_override if data else None
    if override is None:
        return prompt_tags | first_message_tags
    agent = override.agent
    needed = set()
    prompt = agent.prompt.prompt if agent and agent.prompt else None
    needed |= placeholders(prompt) if prompt is not None else prompt_tags
    first = agent.first_message if agent else None
    needed |= placeholders(first) if first is not None else first_message_tags
    return needed | placeholders_in([override.model_dump(mode="json", exclude_none=True)])


def _missing_tags(loc: Loc, needed: set[str], supplied: Iterable[str]) -> ErrorItem | None:
    """The error naming the placeholders a recipient needs and has no value for, if any."""
    missing = needed - set(supplied)
    if not missing:
        return None
    names = ", ".join(f"'{m}'" for m in sorted(missing))
    return ErrorItem(
        loc,
        f"no value for placeholder {names} used by the agent's prompt",
        "missing_dynamic_variable",
        ctx={"missing": sorted(missing)},
    )


@dataclass(frozen=True)
class _Voicemail:
    """A batch's voicemail behaviour and message template, and the tags its message needs."""

    behavior: str
    message: str
    tags: set[str]

    def options(self) -> dict[str, Any]:
        """The batch's columns that store it."""
        return {"voicemail_behavior": self.behavior, "voicemail_message_template": self.message}


def _voicemail(agent: Agent, behavior: str | None, message: str | None, loc: Loc) -> _Voicemail:
    """The batch's voicemail behaviour: the request's, else the agent's (each field on its
    own); leave_message needs a message (422 at ``loc``), whose tags every recipient must
    supply."""
    behavior = behavior or agent.voicemail_behavior
    message = agent.voicemail_message if message is None else message
    check_voicemail_message(behavior, message, loc)
    needs = placeholders(message) if behavior == VoicemailBehavior.LEAVE_MESSAGE else set()
    return _Voicemail(behavior, message, needs)


# Positions in a call row (batches_repo.CALL_COPY_COLUMNS).
PHONE, STATUS, OUTCOME, CONTACT = 5, 8, 9, 10


@dataclass
class _Recipients:
    rows: list[list[Any]]
    needs_caller_number: bool


def _validate_recipients(
    body: SubmitBatchRequest,
    batch_id: str,
    workspace_id: str,
    agent: Agent,
    voicemail_tags: set[str],
) -> _Recipients:
    """Normalise and check every recipient; raise one 422 naming each bad one by index."""
    errors: list[ErrorItem] = []
    prompt_tags = placeholders(agent.prompt)
    first_message_tags = placeholders(agent.first_message)
    call_ids = new_ids("call", len(body.recipients))
    seen_ids: set[str] = set()
    rows: list[list[Any]] = []
    needs_caller_number = False
    for index, recipient in enumerate(body.recipients):
        loc: list[str | int] = ["body", "recipients", index]
        phone: str | None = None
        if recipient.phone_number:
            needs_caller_number = True
            try:
                phone = normalize_e164(recipient.phone_number)
            except InvalidPhoneNumber as exc:
                errors.append(ErrorItem([*loc, "phone_number"], str(exc), "value_error.phone"))
        elif not recipient.whatsapp_user_id:
            errors.append(
                ErrorItem(loc, "a recipient needs phone_number or whatsapp_user_id", "missing")
            )
        recipient_id = recipient.id or call_ids[index]
        if recipient_id in seen_ids:
            errors.append(
                ErrorItem([*loc, "id"], f"recipient id '{recipient_id}' is repeated", "duplicate")
            )
        seen_ids.add(recipient_id)
        data = recipient.conversation_initiation_client_data
        missing = _missing_tags(
            [*loc, "conversation_initiation_client_data", "dynamic_variables"],
            _needed_tags(recipient, prompt_tags, first_message_tags) | voicemail_tags,
            data.dynamic_variables.keys() if data else (),
        )
        if missing:
            errors.append(missing)
        if len(errors) >= MAX_ERROR_ITEMS:
            break
        rows.append(
            [
                call_ids[index],
                batch_id,
                workspace_id,
                index,
                recipient_id,
                phone,
                recipient.whatsapp_user_id,
                # As JSON text already: COPY takes it as is, without a dict in between.
                data.model_dump_json(exclude_unset=True) if data else None,
                CallStatus.PENDING,
                None,
                None,
                None,
            ]
        )
    if errors:
        raise ValidationFailed(errors)
    return _Recipients(rows=rows, needs_caller_number=needs_caller_number)


def _exclude_undialable(session: Session, workspace_id: str, rows: list[list[Any]]) -> int:
    """Mark recipients on the do-not-call list, and repeats of a number, as never to be dialed.

    They stay in the batch (cancelled, with outcome ``dnc`` or ``duplicate``); how many.
    """
    listed = dnc_repo.listed_among(
        session, workspace_id, [row[PHONE] for row in rows if row[PHONE]]
    )
    seen: set[str] = set()
    excluded = 0
    for row in rows:
        phone = row[PHONE]
        if phone is None:
            continue
        outcome = Outcome.DNC if phone in listed else Outcome.DUPLICATE if phone in seen else None
        seen.add(phone)
        if outcome is not None:
            row[STATUS], row[OUTCOME] = plans.status_at_submit(outcome)
            excluded += 1
    return excluded


def _requested_callers(body: SubmitBatchRequest) -> list[tuple[Loc, str]]:
    """``agent_phone_number_id`` then ``agent_phone_number_ids``, each with where it was given."""
    given: list[tuple[Loc, str]] = []
    if body.agent_phone_number_id:
        given.append((["body", "agent_phone_number_id"], body.agent_phone_number_id))
    for index, number_id in enumerate(body.agent_phone_number_ids or []):
        given.append((["body", "agent_phone_number_ids", index], number_id))
    return given


def _caller_pool(
    session: Session,
    workspace_id: str,
    given: list[tuple[Loc, str]],
    needed: bool,
    default_loc: Loc,
) -> list[PhoneNumber]:
    """The batch's caller numbers: those ``given`` (repeats dropped), else the workspace's
    default number when calls are to be placed (422 at ``default_loc`` when it has none).

    Every number must exist in the workspace, place calls through a dialable provider, and use
    the same provider account as the first, so one account's pace covers the whole pool.
    """
    if not given:
        if not needed:
            return []
        default = numbers_repo.default_phone_number(session, workspace_id)
        if default is None:
            raise ValidationFailed.one(
                default_loc,
                "no caller number given and the workspace has none registered",
                "missing",
            )
        given = [(default_loc, default.id)]
    errors: list[ErrorItem] = []
    pool: list[PhoneNumber] = []
    for loc, number_id in given:
        number = numbers_repo.get_phone_number(session, workspace_id, number_id)
        if number is None:
            errors.append(ErrorItem(loc, f"phone number '{number_id}' not found", "not_found"))
        elif number.provider not in DIALABLE_PROVIDERS:
            errors.append(
                ErrorItem(
                    loc,
                    f"provider '{number.provider}' cannot place calls yet; use a twilio number",
                    "unsupported_provider",
                )
            )
        elif pool and (number.provider, number.credentials_ref) != (
            pool[0].provider,
            pool[0].credentials_ref,
        ):
            errors.append(
                ErrorItem(
                    loc,
                    "every caller number of a batch must use the same provider account "
                    f"as '{pool[0].id}'",
                    "mixed_provider_accounts",
                )
            )
        elif all(number.id != kept.id for kept in pool):
            pool.append(number)
    if errors:
        raise ValidationFailed(errors)
    return pool


@dataclass
class _NewBatch:
    """A validated batch, ready to be stored with its calls."""

    id: str
    name: str
    agent: Agent
    pool: list[PhoneNumber]
    rows: list[list[Any]]
    scheduled_at: datetime
    # The batch's own columns beyond those every batch sets.
    options: dict[str, Any]


def _claim_key(
    session: Session, workspace_id: str, key: str | None, fingerprint: str, batch_id: str
) -> str | None:
    """Take the idempotency key for ``batch_id``; the earlier batch's id when a concurrent
    request with the same key committed first (None when the key is now ours, or not given)."""
    if not key or batches_repo.claim_idempotency_key(
        session, workspace_id, key, fingerprint, batch_id, get_settings().idempotency_ttl_s
    ):
        return None
    earlier = _earlier_batch(session, workspace_id, key, fingerprint)
    if earlier is None:
        raise Conflict(["header", "Idempotency-Key"], "the key is in use; retry")
    return earlier


def _store_batch(session: Session, workspace_id: str, batch: _NewBatch) -> None:
    """Insert the batch and all its calls (COPY) in the session's transaction, with the
    do-not-call list and repeated numbers applied; start it after commit if it is due."""
    excluded = _exclude_undialable(session, workspace_id, batch.rows)
    number = batch.pool[0] if batch.pool else None
    store.insert_batch(
        session,
        {
            "id": batch.id,
            "workspace_id": workspace_id,
            "name": batch.name,
            "agent_id": batch.agent.id,
            "phone_number_id": number.id if number else None,
            "phone_provider": number.provider if number else None,
            "phone_number_ids": [caller.id for caller in batch.pool],
            "scheduled_at": batch.scheduled_at,
            "prompt_template": batch.agent.prompt,
            "first_message_template": batch.agent.first_message,
            **batch.options,
        },
        batch.rows,
        excluded,
    )
    if batch.scheduled_at <= datetime.now(UTC):
        batch_id = batch.id
        after_commit(session, lambda: messaging.publish(messaging.TASK_START_BATCH, [batch_id]))


def submit_batch(
    session: Session, workspace_id: str, body: SubmitBatchRequest, idempotency_key: str | None
) -> str:
    """Store a batch and all its recipients in one transaction; start it after commit if due.

    With an idempotency key already used for the same request within the TTL, nothing is
    written and the first batch's id is returned.
    """
    fingerprint = request_fingerprint(body) if idempotency_key else ""
    if idempotency_key:
        earlier = _earlier_batch(session, workspace_id, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier

    agent = agents_repo.get_agent(session, workspace_id, body.agent_id)
    if agent is None:
        raise ValidationFailed.one(
            ["body", "agent_id"], f"agent '{body.agent_id}' not found", "not_found"
        )
    if body.timezone is not None:
        try:
            ZoneInfo(body.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationFailed.one(
                ["body", "timezone"], f"unknown time zone '{body.timezone}'"
            ) from exc
    _check_calling_window(body)
    voicemail = _voicemail(
        agent, body.voicemail_behavior, body.voicemail_message, ["body", "voicemail_message"]
    )
    batch_id = new_id("batch")
    recipients = _validate_recipients(body, batch_id, workspace_id, agent, voicemail.tags)
    pool = _caller_pool(
        session,
        workspace_id,
        _requested_callers(body),
        recipients.needs_caller_number,
        ["body", "agent_phone_number_id"],
    )
    earlier = _claim_key(session, workspace_id, idempotency_key, fingerprint, batch_id)
    if earlier is not None:
        return earlier

    scheduled = (
        datetime.fromtimestamp(body.scheduled_time_unix, UTC)
        if body.scheduled_time_unix is not None
        else datetime.now(UTC)
    )
    _store_batch(
        session,
        workspace_id,
        _NewBatch(
            id=batch_id,
            name=body.call_name,
            agent=agent,
            pool=pool,
            rows=recipients.rows,
            scheduled_at=scheduled,
            options={
                "whatsapp_params": body.whatsapp_params.model_dump(mode="json")
                if body.whatsapp_params
                else None,
                "timezone": body.timezone,
                "telephony_call_config": body.telephony_call_config.model_dump(mode="json")
                if body.telephony_call_config
                else None,
                "target_concurrency_limit": body.target_concurrency_limit,
                "retry_policy": body.retry_policy.model_dump(mode="json")
                if body.retry_policy
                else None,
                "calling_window": body.calling_window.model_dump(mode="json")
                if body.calling_window
                else None,
                **voicemail.options(),
            },
        ),
    )
    return batch_id


def _bulk_template(session: Session, workspace_id: str, body: CallBulkRequest) -> Agent:
    """The agent call-bulk calls with: the one named by ``aiSettingsTemplateId``, else the
    workspace's oldest agent."""
    loc = ["body", "aiSettingsTemplateId"]
    if body.ai_settings_template_id is None:
        agent = agents_repo.oldest_agent(session, workspace_id)
        if agent is None:
            raise ValidationFailed.one(
                loc, "no aiSettingsTemplateId given and the workspace has no agent", "missing"
            )
        return agent
    template_id = str(body.ai_settings_template_id)
    agent = agents_repo.get_agent_by_template_id(session, workspace_id, template_id)
    if agent is None:
        raise ValidationFailed.one(
            loc, f"AI settings template '{template_id}' not found", "not_found"
        )
    return agent


@dataclass
class _Contacts:
    rows: list[list[Any]]
    # One entry per number: the first value given for each field among its contacts.
    book: dict[str, dict[str, Any]]


def _validate_contacts(
    body: CallBulkRequest,
    batch_id: str,
    workspace_id: str,
    agent: Agent,
    voicemail_tags: set[str],
) -> _Contacts:
    """Normalise and check every contact; raise one 422 naming each bad one by index."""
    errors: list[ErrorItem] = []
    needed = placeholders(agent.prompt) | placeholders(agent.first_message) | voicemail_tags
    call_ids = new_ids("call", len(body.contacts))
    rows: list[list[Any]] = []
    book: dict[str, dict[str, Any]] = {}
    for index, contact in enumerate(body.contacts):
        loc: list[str | int] = ["body", "contacts", index]
        phone: str | None = None
        try:
            phone = normalize_e164(contact.number_to_call, body.country_code)
        except InvalidPhoneNumber as exc:
            errors.append(ErrorItem([*loc, "numberToCall"], str(exc), "value_error.phone"))
        tags = contact.prompt_tags or {}
        missing = _missing_tags([*loc, "promptTags"], needed, tags.keys())
        if missing:
            errors.append(missing)
        if len(errors) >= MAX_ERROR_ITEMS:
            break
        if errors:
            continue
        assert phone is not None
        entry = book.setdefault(
            phone,
            {"phone_number": phone, "first_name": None, "last_name": None, "email": None},
        )
        for field, value in (
            ("first_name", contact.first_name),
            ("last_name", contact.last_name),
            ("email", contact.email),
        ):
            if entry[field] is None:
                entry[field] = value
        rows.append(
            [
                call_ids[index],
                batch_id,
                workspace_id,
                index,
                call_ids[index],
                phone,
                None,
                {"dynamic_variables": tags},
                CallStatus.PENDING,
                None,
                None,
                contact.metadata,
            ]
        )
    if errors:
        raise ValidationFailed(errors)
    return _Contacts(rows=rows, book=book)


def submit_call_bulk(
    session: Session, workspace_id: str, body: CallBulkRequest, idempotency_key: str | None
) -> str:
    """Store a call-bulk request as a batch: contacts upserted, one call per contact, all in
    one transaction; the batch starts after commit like any submitted batch.

    The same idempotency rules as ``submit_batch`` apply.
    """
    fingerprint = request_fingerprint(body) if idempotency_key else ""
    if idempotency_key:
        earlier = _earlier_batch(session, workspace_id, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier
    if body.country_code is not None and not is_known_region(body.country_code):
        raise ValidationFailed.one(
            ["body", "countryCode"], f"unknown region code '{body.country_code}'"
        )
    agent = _bulk_template(session, workspace_id, body)
    voicemail = _voicemail(
        agent, body.voicemail_behavior, body.voicemail_message, ["body", "voicemailMessage"]
    )
    batch_id = new_id("batch")
    contacts = _validate_contacts(body, batch_id, workspace_id, agent, voicemail.tags)
    pool = _caller_pool(session, workspace_id, [], True, ["body"])
    earlier = _claim_key(session, workspace_id, idempotency_key, fingerprint, batch_id)
    if earlier is not None:
        return earlier

    contact_ids = contacts_repo.upsert_contacts(
        session,
        workspace_id,
        [
            {**entry, "id": contact_id}
            for entry, contact_id in zip(
                contacts.book.values(), new_ids("contact", len(contacts.book)), strict=True
            )
        ],
        body.update_existing,
    )
    for row in contacts.rows:
        row[CONTACT] = contact_ids[row[PHONE]]
    now = datetime.now(UTC)
    _store_batch(
        session,
        workspace_id,
        _NewBatch(
            id=batch_id,
            name=f"call-bulk {now.strftime('%Y-%m-%d %H:%M:%S')} UTC",
            agent=agent,
            pool=pool,
            rows=contacts.rows,
            scheduled_at=now,
            options={"fan_out_chunk_size": body.batch_size, **voicemail.options()},
        ),
    )
    return batch_id


def call_bulk_result(session: Session, workspace_id: str, batch_id: str) -> CallBulkResponse:
    """What call-bulk answers: the batch, its call ids in contact order, and its status."""
    batch = get_batch(session, workspace_id, batch_id)
    return CallBulkResponse(
        batch_id=batch_id,
        call_ids=calls_repo.call_ids_of_batch(session, batch_id),
        status=batch.status,
    )


def _check_calling_window(body: SubmitBatchRequest) -> None:
    """A batch window must be a real window, and inside the default unless it says otherwise."""
    spec = body.calling_window
    if spec is None:
        return
    loc = ["body", "calling_window"]
    window = CallingWindow.from_json(spec.model_dump())
    if window.start >= window.end:
        raise ValidationFailed.one(loc, "start must be before end (windows do not span midnight)")
    if spec.timezone is not None:
        try:
            ZoneInfo(spec.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationFailed.one(
                [*loc, "timezone"], f"unknown time zone '{spec.timezone}'"
            ) from exc
    default = CallingWindow.from_spec(get_settings().default_calling_window)
    if not spec.override_default_window and not window.within(default):
        raise ValidationFailed.one(
            loc,
            f"the window reaches outside the workspace default "
            f"({get_settings().default_calling_window}, recipient-local); "
            "set override_default_window to widen it",
        )


def _earlier_batch(session: Session, workspace_id: str, key: str, fingerprint: str) -> str | None:
    earlier = batches_repo.find_idempotency_key(
        session, workspace_id, key, get_settings().idempotency_ttl_s
    )
    if earlier is None:
        return None
    if earlier.request_hash != fingerprint:
        raise Conflict(
            ["header", "Idempotency-Key"],
            "this Idempotency-Key was used for a different request within the last 24 hours",
        )
    return earlier.batch_id


def _batch_response(row: Row[Any], cls: type[BatchResponse] = BatchResponse, **extra: Any) -> Any:
    return cls(
        id=row.id,
        name=row.name,
        agent_id=row.agent_id,
        created_at_unix=unix(row.created_at),
        scheduled_time_unix=unix(row.scheduled_at),
        last_updated_at_unix=unix(row.last_updated_at),
        status=row.status,
        agent_name=row.agent_name,
        phone_number_id=row.phone_number_id,
        phone_number_ids=row.phone_number_ids,
        phone_provider=row.phone_provider,
        whatsapp_params=row.whatsapp_params,
        total_calls_dispatched=row.total_calls_dispatched,
        total_calls_scheduled=row.total_calls_scheduled,
        total_calls_finished=row.total_calls_finished,
        retry_count=row.retry_count,
        timezone=row.timezone,
        telephony_call_config=TelephonyCallConfigResponse.model_validate(
            {
                **(row.telephony_call_config or {}),
                "ringing_timeout_secs": ringing_timeout_s(row.telephony_call_config),
            }
        ),
        target_concurrency_limit=row.target_concurrency_limit,
        retry_policy=row.retry_policy,
        calling_window=row.calling_window,
        voicemail_behavior=VoicemailBehavior(row.voicemail_behavior),
        voicemail_message=row.voicemail_message_template,
        paused=row.paused_at is not None,
        paused_reason=_paused_reason(row),
        **extra,
    )


def _paused_reason(row: Row[Any]) -> PausedReason | None:
    # A batch paused before reasons were recorded was paused through the endpoint.
    if row.paused_at is None:
        return None
    return cast(PausedReason, row.paused_reason or PAUSED_MANUALLY)


def get_batch(session: Session, workspace_id: str, batch_id: str) -> BatchResponse:
    """The batch without its recipients, or 404."""
    row = batches_repo.get_batch_row(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    return _batch_response(row)


def get_batch_detail(session: Session, workspace_id: str, batch_id: str) -> BatchDetailResponse:
    """The batch and every recipient with its status, or 404."""
    row = batches_repo.get_batch_row(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    recipients = [
        RecipientResponse(
            id=r.recipient_id,
            phone_number=r.phone_number,
            whatsapp_user_id=r.whatsapp_user_id,
            status=public_status(r.status),  # type: ignore[arg-type]
            outcome=r.outcome,
            attempts=r.attempts,
            created_at_unix=unix(r.created_at),
            updated_at_unix=unix(r.updated_at),
            conversation_id=r.id if r.provider_call_sid else None,
            provider_call_sid=r.provider_call_sid,
            caller_number=r.caller_number,
            conversation_initiation_client_data=r.client_data,
            attempt_history=r.attempt_history,
        )
        for r in calls_repo.recipient_rows(session, batch_id)
    ]
    return _batch_response(row, BatchDetailResponse, recipients=recipients)


def list_batches(
    session: Session, workspace_id: str, limit: int, last_doc: str | None, agent_id: str | None
) -> tuple[list[BatchResponse], bool]:
    """One page of batches, newest first, and whether more follow."""
    rows = batches_repo.list_batch_rows(session, workspace_id, limit + 1, last_doc, agent_id)
    return [_batch_response(r) for r in rows[:limit]], len(rows) > limit


def dashboard_batches(session: Session, workspace_id: str, limit: int) -> DashboardResponse:
    """The newest batches with their counters and their recipients counted by public status."""
    rows = batches_repo.dashboard_batch_rows(session, workspace_id, limit)
    counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
    for batch_id, status, count in calls_repo.status_counts(session, list(counts)):
        by_status = counts[batch_id]
        # `dialing` is counted as `pending`, as every recipient response shows it.
        shown = public_status(status)
        by_status[shown] = by_status.get(shown, 0) + count
    return DashboardResponse(
        batches=[
            DashboardBatch(
                id=row.id,
                name=row.name,
                status=row.status,
                paused=row.paused_at is not None,
                paused_reason=_paused_reason(row),
                created_at_unix=unix(row.created_at),
                total_calls_scheduled=row.total_calls_scheduled,
                total_calls_dispatched=row.total_calls_dispatched,
                total_calls_finished=row.total_calls_finished,
                retry_count=row.retry_count,
                total_recipients=row.total_recipients,
                final_recipients=row.calls_final,
                recipients_by_status=counts[row.id],  # type: ignore[arg-type]
            )
            for row in rows
        ]
    )


def _fan_out(session: Session, batch_id: str) -> None:
    call_ids = calls_repo.mark_batch_calls_enqueued(session, batch_id)
    chunk_size = batches_repo.fan_out_chunk_size(session, batch_id)
    _publish_dials_after_commit(session, call_ids, chunk_size)


def _within_free_slots(candidates: Sequence[Any]) -> list[str]:
    """The candidates that have a free live-call slot now (workspace cap, and the batch's
    target_concurrency_limit), oldest due first; the others wait, unpublished, for a later
    tick. A call dialed without a free slot would only be handed back again: this keeps a
    workspace at its cap from spinning through claims of calls that cannot be placed."""
    needs = [
        (row.id, slots.slot_limits(row.batch_id, row.workspace_id, row.target_concurrency_limit))
        for row in candidates
    ]
    limits = {limit.key: limit.limit for _, call_limits in needs for limit in call_limits}
    try:
        held = slots.taken(list(limits))
    except RedisError as exc:  # the dial itself will find out
        log.warning("concurrency slots unavailable to the tick: %s", exc)
        return [call_id for call_id, _ in needs]
    free = {key: limit - held[key] for key, limit in limits.items()}
    chosen = []
    for call_id, call_limits in needs:
        if all(free[limit.key] > 0 for limit in call_limits):
            for limit in call_limits:
                free[limit.key] -= 1
            chosen.append(call_id)
    return chosen


def dial_groups(call_ids: Sequence[str]) -> list[list[str]]:
    """The calls in groups, one dial message each: up to ``max_calls_per_dial_message``, but
    at least ``dial_messages_min`` messages when there are that many calls."""
    settings = get_settings()
    spread = len(call_ids) // settings.dial_messages_min
    size = max(1, min(settings.max_calls_per_dial_message, spread))
    return [list(call_ids[i : i + size]) for i in range(0, len(call_ids), size)]


def _publish_dials_after_commit(
    session: Session, call_ids: Sequence[str], chunk_size: int | None = None
) -> None:
    """Dial these calls, after commit: ``calls.dial`` messages, or ``calls.dial_many``."""
    groups = dial_groups(call_ids)
    if groups and len(groups[0]) > 1:
        _publish_after_commit(session, messaging.TASK_DIAL_MANY, groups, chunk_size)
    else:
        _publish_after_commit(session, messaging.TASK_DIAL, call_ids, chunk_size)


def _publish_after_commit(
    session: Session,
    task_name: str,
    ids: Sequence[Any],
    chunk_size: int | None = None,
) -> None:
    """One ``task_name`` message per item of ``ids``, after commit; its one argument is the
    item."""
    if ids:
        chunk = chunk_size or get_settings().fan_out_chunk_size
        after_commit(
            session,
            lambda: log.info(
                "published %d %s",
                messaging.publish_many(task_name, ([i] for i in ids), chunk),
                task_name,
            ),
        )


def start_batch(session: Session, batch_id: str) -> bool:
    """pending → in_progress if due, and fan its recipients out as dial messages after commit."""
    status = store.start_batch_if_due(session, batch_id)
    if status is None:
        return False
    _started(session, batch_id, status)
    return True


def _started(session: Session, batch_id: str, status: BatchStatus) -> None:
    """A batch just started: fan its calls out, or, when none was left to call (all excluded
    at submit), report it completed."""
    if status == BatchStatus.COMPLETED:
        webhooks.batch_completed(session, batch_id)
    else:
        _fan_out(session, batch_id)


@dataclass(frozen=True)
class TickReport:
    """What one tick did."""

    batches_started: int
    calls_redriven: int
    calls_reconciling: int


# After the broker restarted empty, calls published longer ago than this are published again
# at once (their messages were lost with it); later ones were published to the new broker.
RESET_REDRIVE_AFTER_S = 2.0

# How long after a batch was cancelled or failed the tick still looks for calls left pending.
ORPHAN_WINDOW_S = 3600.0


# How often the live-call slots in Redis are checked against PostgreSQL for leaks.
SLOT_AUDIT_INTERVAL_S = 30.0


def run_tick(transaction: Transaction) -> TickReport:
    """One tick, with what comes before its transaction: whether the broker restarted empty
    since the last one, the live-call slots rebuilt from PostgreSQL if Redis lost them, and,
    every ``SLOT_AUDIT_INTERVAL_S``, their audit."""
    broker_reset = messaging.broker_restarted()
    restore_slots(transaction)
    if slots.audit_due(SLOT_AUDIT_INTERVAL_S):
        audit_slots(transaction)
    with transaction() as session:
        report = tick(session, broker_reset)
    if broker_reset:
        log.warning("the broker restarted empty: every message published before is re-driven")
    return report


def tick(session: Session, broker_reset: bool = False) -> TickReport:
    """Start due batches, re-drive calls whose messages were lost, reconcile stale calls, and
    publish webhook deliveries and status reports that are due (retries, and messages that
    were lost).

    With ``broker_reset`` (the broker restarted empty since the last tick), every message
    published before is presumed lost and its work re-driven at once.

    Every step claims rows with SKIP LOCKED or a guarded UPDATE, so two concurrent ticks (two
    beats) split the work instead of doubling it.
    """
    settings = get_settings()
    started = store.claim_due_batches(session, limit=50)
    for batch_id, status in started:
        _started(session, batch_id, status)
    # Only when the dial queue is empty can a published-but-pending call be presumed lost;
    # otherwise its message may simply be waiting its turn.
    if broker_reset:
        stale_enqueued_after_s: float | None = RESET_REDRIVE_AFTER_S
    elif messaging.queue_length(messaging.QUEUE_DIAL) == 0:
        stale_enqueued_after_s = settings.redrive_after_s
    else:
        stale_enqueued_after_s = None
    candidates = calls_repo.redrive_candidates(
        session, stale_enqueued_after_s=stale_enqueued_after_s, limit=settings.tick_batch_limit
    )
    redriven = _within_free_slots(candidates)
    calls_repo.mark_enqueued(session, redriven)
    _publish_dials_after_commit(session, redriven)
    stale = calls_repo.stale_live_calls(
        session,
        dialing_after_s=settings.dial_stale_after_s,
        ringing_grace_s=settings.callback_grace_s,
        default_ringing_s=settings.default_ringing_timeout_s,
        answered_after_s=settings.live_call_check_s,
        recheck_after_s=settings.reconcile_interval_s,
        limit=settings.tick_batch_limit,
    )
    _publish_after_commit(session, messaging.TASK_RECONCILE, stale)
    transitions.finalise_orphans(session, ORPHAN_WINDOW_S, settings.tick_batch_limit)
    inbox_after_s = RESET_REDRIVE_AFTER_S if broker_reset else settings.status_inbox_redrive_after_s
    # A machine verdict's action is asked for again while its call is live and nothing was
    # done (the task is idempotent: it acts only while the call's voicemail_action is unset).
    machines = calls_repo.machines_left_unanswered(
        session, inbox_after_s, settings.tick_batch_limit
    )
    _publish_after_commit(session, messaging.TASK_ANSWER_MACHINE, machines)
    lost_after_s = RESET_REDRIVE_AFTER_S if broker_reset else settings.redrive_after_s
    deliveries = webhooks_repo.due_deliveries(session, lost_after_s, settings.tick_batch_limit)
    _publish_after_commit(session, messaging.TASK_DELIVER_WEBHOOK, deliveries)
    redrive_status_inbox(session, inbox_after_s, lost=broker_reset)
    return TickReport(len(started), len(redriven), len(stale))


def _locked_batch(session: Session, workspace_id: str, batch_id: str) -> Any:
    row = batches_repo.lock_batch(session, workspace_id, batch_id)
    if row is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")
    return row


def _to_apply(plan: ControlPlan) -> bool:
    """Whether a control request's plan is to be applied (409 when it is refused)."""
    if plan.control is Control.REFUSE:
        raise Conflict(["path", "batch_id"], plan.reason)
    return plan.control is Control.APPLY


def cancel_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """pending/in_progress → cancelled; undialed recipients become cancelled. Idempotent."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if _to_apply(plans.plan_cancel(BatchStatus(batch.status))):
        transitions.cancel_batch(session, batch_id)


def pause_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """A paused batch places no new calls and keeps its place. Idempotent."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if _to_apply(plans.plan_pause(BatchStatus(batch.status), batch.paused_at is not None)):
        store.set_paused(session, batch_id, PAUSED_MANUALLY)
        webhooks.batch_paused(session, batch_id)


def resume_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """Resume a paused batch, whatever paused it (its reason is cleared, and a run of dials
    its provider did not process starts afresh): its due calls are published again after
    commit."""
    batch = _locked_batch(session, workspace_id, batch_id)
    if not _to_apply(plans.plan_resume(batch.paused_at is not None)):
        return
    store.set_paused(session, batch_id, None)
    if batch.status == BatchStatus.IN_PROGRESS:
        _fan_out(session, batch_id)


def retry_batch(session: Session, workspace_id: str, batch_id: str) -> int:
    """Dial again every recipient whose final outcome was failed, busy or no-answer.

    Those recipients stop being finished (the counter goes down by as many) and the batch is
    in progress again; completed, voicemail and cancelled recipients are left as they are.
    """
    batch = _locked_batch(session, workspace_id, batch_id)
    _to_apply(plans.plan_manual_retry(BatchStatus(batch.status)))
    call_ids = transitions.retry_failed_calls(session, batch_id)
    _publish_dials_after_commit(session, call_ids)
    return len(call_ids)


def delete_batch(workspace_id: str, batch_id: str, transaction: Transaction) -> None:
    """Delete the batch and its recipients for good, or 404. A pending or running batch is
    cancelled first and its claims settled, so no call is placed once this returns; calls
    still live are hung up before their rows go."""
    with transaction() as session:
        batch = _locked_batch(session, workspace_id, batch_id)
        running = batch.status in BATCH_OPEN
        if running:
            cancel_batch(session, workspace_id, batch_id)
    if running:
        settle_claims(batch_id, transaction, committed_at=time.monotonic())
    with transaction() as session:
        live = calls_repo.live_call_ids(session, batch_id)
    # Ended here rather than by the queued hang-ups: those find no row once it is deleted.
    for call_id in live:
        hang_up_call(call_id, transaction)
    with transaction() as session:
        batch = _locked_batch(session, workspace_id, batch_id)
        if batch.status in BATCH_OPEN:
            raise Conflict(["path", "batch_id"], "the batch was started again meanwhile")
        batches_repo.delete_batch(session, workspace_id, batch_id)


def settle_claims(batch_id: str, transaction: Transaction, committed_at: float) -> None:
    """After a cancel or pause committed (at ``committed_at``, ``time.monotonic()``): wait out
    the dials' fence, then end the cancelled batch's live calls through the provider.

    A dial sends its request only within ``DIAL_SEND_WINDOW_S`` of a read that saw its batch
    running (its claim, or a later read), and ``DIAL_FENCE_S`` is longer: once it has passed
    since the commit, no request of this batch can go out any more, whatever the state of the
    workers holding its claims (a dead worker's claim is reconciled later, and ends
    cancelled). Calls placed right before the commit whose answers are recorded after the
    lookup below are hung up by the transaction that records them.
    """
    time.sleep(max(committed_at + DIAL_FENCE_S - time.monotonic(), 0.0))
    with transaction() as session:
        if batches_repo.batch_status(session, batch_id) == BatchStatus.CANCELLED:
            _publish_after_commit(
                session, messaging.TASK_HANG_UP, calls_repo.live_call_ids(session, batch_id)
            )
