"""Call-bulk: a list of contacts stored as a batch, with the same rules as a submitted one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from shared.agents import repository as agents_repo
from shared.batches import calls_repository as calls_repo
from shared.batches.recipients import (
    CONTACT,
    PHONE,
    Recipient,
    batch_voicemail,
    call_rows,
)
from shared.batches.submit import (
    NewBatch,
    caller_pool,
    claim_key,
    replayed,
    store_batch,
)
from shared.batches.views import get_batch
from shared.contacts import repository as contacts_repo
from shared.errors import ValidationFailed
from shared.ids import new_id, new_ids
from shared.models import Agent
from shared.phone_numbers.e164 import is_known_region
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


def _recipients(
    body: CallBulkRequest, agent: Agent, voicemail_tags: set[str]
) -> Iterator[Recipient]:
    """The request's contacts, for ``call_rows``."""
    needed = placeholders(agent.prompt) | placeholders(agent.first_message) | voicemail_tags
    for index, contact in enumerate(body.contacts):
        tags = contact.prompt_tags or {}
        yield Recipient(
            loc=["body", "contacts", index],
            phone=contact.number_to_call,
            phone_field="numberToCall",
            whatsapp_user_id=None,
            recipient_id=None,
            needed=needed,
            values=tags,
            values_loc=["promptTags"],
            client_data={"dynamic_variables": tags},
            metadata=contact.metadata,
        )


def _contact_book(body: CallBulkRequest, rows: list[list[Any]]) -> dict[str, dict[str, Any]]:
    """One entry per number: the first value given for each field among its contacts."""
    book: dict[str, dict[str, Any]] = {}
    for contact, row in zip(body.contacts, rows, strict=True):
        phone = row[PHONE]
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
    return book


def submit_call_bulk(
    session: Session, workspace_id: str, body: CallBulkRequest, idempotency_key: str | None
) -> str:
    """Store a call-bulk request as a batch: contacts upserted, one call per contact, all in
    one transaction; the batch starts after commit like any submitted batch.

    The same idempotency rules as ``submit_batch`` apply.
    """
    fingerprint, earlier = replayed(session, workspace_id, body, idempotency_key)
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
    rows = call_rows(
        _recipients(body, agent, voicemail.tags),
        len(body.contacts),
        batch_id,
        workspace_id,
        region=body.country_code,
    )
    book = _contact_book(body, rows)
    pool = caller_pool(session, workspace_id, [], True, ["body"])
    earlier = claim_key(session, workspace_id, idempotency_key, fingerprint, batch_id)
    if earlier is not None:
        return earlier

    contact_ids = contacts_repo.upsert_contacts(
        session,
        workspace_id,
        [
            {**entry, "id": contact_id}
            for entry, contact_id in zip(book.values(), new_ids("contact", len(book)), strict=True)
        ],
        body.update_existing,
    )
    for row in rows:
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
            rows=rows,
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
