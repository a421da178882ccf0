"""Call-bulk: a list of contacts stored as a batch, with the same rules as a submitted one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from shared.batches import repository as batches_repo
from shared.batches.recipients import CONTACT, MAX_ERROR_ITEMS, PHONE, batch_voicemail, missing_tags
from shared.batches.submit import (
    NewBatch,
    caller_pool,
    claim_key,
    earlier_batch,
    request_fingerprint,
    store_batch,
)
from shared.batches.views import get_batch
from shared.errors import ErrorItem, ValidationFailed
from shared.ids import new_id, new_ids
from shared.lifecycle.states import CallStatus
from shared.models import Agent
from shared.phones import InvalidPhoneNumber, is_known_region, normalize_e164
from shared.repositories import agents as agents_repo
from shared.repositories import contacts as contacts_repo
from shared.schemas import CallBulkRequest, CallBulkResponse
from shared.templates import placeholders


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
        missing = missing_tags([*loc, "promptTags"], needed, tags.keys())
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
        earlier = earlier_batch(session, workspace_id, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier
    if body.country_code is not None and not is_known_region(body.country_code):
        raise ValidationFailed.one(
            ["body", "countryCode"], f"unknown region code '{body.country_code}'"
        )
    agent = _bulk_template(session, workspace_id, body)
    voicemail = batch_voicemail(
        agent, body.voicemail_behavior, body.voicemail_message, ["body", "voicemailMessage"]
    )
    batch_id = new_id("batch")
    contacts = _validate_contacts(body, batch_id, workspace_id, agent, voicemail.tags)
    pool = caller_pool(session, workspace_id, [], True, ["body"])
    earlier = claim_key(session, workspace_id, idempotency_key, fingerprint, batch_id)
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
    store_batch(
        session,
        workspace_id,
        NewBatch(
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
        call_ids=batches_repo.call_ids_of_batch(session, batch_id),
        status=batch.status,
    )
