"""Submitting a batch: the request checked, its caller numbers chosen, its idempotency key taken,
and the batch stored with all its calls."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel
from sqlalchemy.orm import Session

from shared import messaging
from shared.agents import repository as agents_repo
from shared.batches import repository as batches_repo
from shared.batches.recipients import (
    Recipient,
    batch_voicemail,
    call_rows,
    exclude_undialable,
    needed_tags,
)
from shared.db import after_commit
from shared.errors import Conflict, ErrorItem, Loc, ValidationFailed
from shared.ids import new_id
from shared.lifecycle import store
from shared.models import Agent, PhoneNumber
from shared.phone_numbers import repository as numbers_repo
from shared.schemas import SubmitBatchRequest
from shared.settings import get_settings
from shared.telephony import registry
from shared.templates import placeholders
from shared.windows import CallingWindow

# The providers with an adapter on the port (``shared/telephony/registry.py``).
DIALABLE_PROVIDERS = frozenset(registry.ADAPTERS)


def replayed(
    session: Session, workspace_id: str, body: BaseModel, idempotency_key: str | None
) -> tuple[str, str | None]:
    """The request's fingerprint (empty without a key), and the batch an identical request
    already made under the same key within the TTL, if any (409 for a different request)."""
    if not idempotency_key:
        return "", None
    fingerprint = request_fingerprint(body)
    return fingerprint, earlier_batch(session, workspace_id, idempotency_key, fingerprint)


def request_fingerprint(body: BaseModel) -> str:
    """A hash of the request, to tell a retried submit from a different one under one key."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _recipients(
    body: SubmitBatchRequest, agent: Agent, voicemail_tags: set[str]
) -> Iterator[Recipient]:
    """The request's recipients, for ``call_rows``."""
    prompt_tags = placeholders(agent.prompt)
    first_message_tags = placeholders(agent.first_message)
    for index, recipient in enumerate(body.recipients):
        data = recipient.conversation_initiation_client_data
        yield Recipient(
            loc=["body", "recipients", index],
            phone=recipient.phone_number,
            phone_field="phone_number",
            whatsapp_user_id=recipient.whatsapp_user_id,
            recipient_id=recipient.id,
            needed=needed_tags(recipient, prompt_tags, first_message_tags) | voicemail_tags,
            values=data.dynamic_variables if data else {},
            values_loc=["conversation_initiation_client_data", "dynamic_variables"],
            # As JSON text already: COPY takes it as is, without a dict in between.
            client_data=data.model_dump_json(exclude_unset=True) if data else None,
        )


def _requested_callers(body: SubmitBatchRequest) -> list[tuple[Loc, str]]:
    """``agent_phone_number_id`` then ``agent_phone_number_ids``, each with where it was given."""
    given: list[tuple[Loc, str]] = []
    if body.agent_phone_number_id:
        given.append((["body", "agent_phone_number_id"], body.agent_phone_number_id))
    for index, number_id in enumerate(body.agent_phone_number_ids or []):
        given.append((["body", "agent_phone_number_ids", index], number_id))
    return given


def caller_pool(
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
                    "every caller number of a batch must dial through the same provider "
                    f"connection (provider and credentials_ref) as '{pool[0].id}'",
                    "mixed_provider_accounts",
                )
            )
        elif all(number.id != kept.id for kept in pool):
            pool.append(number)
    if errors:
        raise ValidationFailed(errors)
    return pool


@dataclass
class NewBatch:
    """A validated batch, ready to be stored with its calls."""

    id: str
    name: str
    agent: Agent
    pool: list[PhoneNumber]
    rows: list[list[Any]]
    scheduled_at: datetime
    # The batch's own columns beyond those every batch sets.
    options: dict[str, Any]


def claim_key(
    session: Session, workspace_id: str, key: str | None, fingerprint: str, batch_id: str
) -> str | None:
    """Take the idempotency key for ``batch_id``; the earlier batch's id when a concurrent
    request with the same key committed first (None when the key is now ours, or not given)."""
    if not key or batches_repo.claim_idempotency_key(
        session, workspace_id, key, fingerprint, batch_id, get_settings().idempotency_ttl_s
    ):
        return None
    earlier = earlier_batch(session, workspace_id, key, fingerprint)
    if earlier is None:
        raise Conflict(["header", "Idempotency-Key"], "the key is in use; retry")
    return earlier


def store_batch(session: Session, workspace_id: str, batch: NewBatch) -> None:
    """Insert the batch and all its calls (COPY) in the session's transaction, with the
    do-not-call list and repeated numbers applied; start it after commit if it is due."""
    excluded = exclude_undialable(session, workspace_id, batch.rows)
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
    fingerprint, earlier = replayed(session, workspace_id, body, idempotency_key)
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
    voicemail = batch_voicemail(
        agent, body.voicemail_behavior, body.voicemail_message, ["body", "voicemail_message"]
    )
    batch_id = new_id("batch")
    rows = call_rows(
        _recipients(body, agent, voicemail.tags), len(body.recipients), batch_id, workspace_id
    )
    pool = caller_pool(
        session,
        workspace_id,
        _requested_callers(body),
        any(recipient.phone_number for recipient in body.recipients),
        ["body", "agent_phone_number_id"],
    )
    earlier = claim_key(session, workspace_id, idempotency_key, fingerprint, batch_id)
    if earlier is not None:
        return earlier

    scheduled = (
        datetime.fromtimestamp(body.scheduled_time_unix, UTC)
        if body.scheduled_time_unix is not None
        else datetime.now(UTC)
    )
    store_batch(
        session,
        workspace_id,
        NewBatch(
            id=batch_id,
            name=body.call_name,
            agent=agent,
            pool=pool,
            rows=rows,
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


def earlier_batch(session: Session, workspace_id: str, key: str, fingerprint: str) -> str | None:
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
