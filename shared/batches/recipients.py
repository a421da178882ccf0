"""What every recipient of a new batch is checked against: its number, its id and the placeholders
it must fill; and which are never to be dialed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.agents.service import check_voicemail_message
from shared.dnc import repository as dnc_repo
from shared.errors import ErrorItem, Loc, ValidationFailed
from shared.ids import new_ids
from shared.lifecycle import plans
from shared.lifecycle.states import CallStatus, Outcome
from shared.models import Agent
from shared.phone_numbers.e164 import InvalidPhoneNumber, normalize_e164
from shared.schemas import OutboundCallRecipient
from shared.templates import placeholders, placeholders_in
from shared.voicemail import VoicemailBehavior

# A rejected 10,000-recipient batch should say what is wrong, not return megabytes.
MAX_ERROR_ITEMS = 200


def needed_tags(
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


def missing_tags(loc: Loc, needed: set[str], supplied: Iterable[str]) -> ErrorItem | None:
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
class Voicemail:
    """A batch's voicemail behaviour and message template, and the tags its message needs."""

    behavior: str
    message: str
    tags: set[str]

    def options(self) -> dict[str, Any]:
        """The batch's columns that store it."""
        return {"voicemail_behavior": self.behavior, "voicemail_message_template": self.message}


def batch_voicemail(agent: Agent, behavior: str | None, message: str | None, loc: Loc) -> Voicemail:
    """The batch's voicemail behaviour: the request's, else the agent's (each field on its
    own); leave_message needs a message (422 at ``loc``), whose tags every recipient must
    supply."""
    behavior = behavior or agent.voicemail_behavior
    message = agent.voicemail_message if message is None else message
    check_voicemail_message(behavior, message, loc)
    needs = placeholders(message) if behavior == VoicemailBehavior.LEAVE_MESSAGE else set()
    return Voicemail(behavior, message, needs)


# Positions in a call row (``store.CALL_COPY_COLUMNS``).
PHONE, STATUS, OUTCOME, CONTACT = 5, 8, 9, 10


def exclude_undialable(session: Session, workspace_id: str, rows: list[list[Any]]) -> int:
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


@dataclass(slots=True)
class Recipient:
    """One recipient of a submit (``recipients[i]``) or call-bulk (``contacts[i]``) request,
    in the terms the checks share."""

    loc: Loc
    # Its number as given, and the field that gives it (an error about it points there).
    phone: str | None
    phone_field: str
    whatsapp_user_id: str | None
    # Its own id, if it gave one (else it is known by its call's id).
    recipient_id: str | None
    # The placeholders it must fill, the values it gives, and where it gives them.
    needed: set[str]
    values: Mapping[str, Any]
    values_loc: Loc
    # What the call row stores of it.
    client_data: Any
    metadata: Any = None


def call_rows(
    recipients: Iterable[Recipient],
    count: int,
    batch_id: str,
    workspace_id: str,
    region: str | None = None,
) -> list[list[Any]]:
    """Normalise and check every recipient, and the call row each becomes (in
    ``store.CALL_COPY_COLUMNS`` order); one 422 naming each bad one by index (at most
    ``MAX_ERROR_ITEMS``). Numbers without a ``+`` are read in ``region``."""
    errors: list[ErrorItem] = []
    call_ids = new_ids("call", count)
    seen_ids: set[str] = set()
    rows: list[list[Any]] = []
    for index, recipient in enumerate(recipients):
        loc = recipient.loc
        phone: str | None = None
        if recipient.phone:
            try:
                phone = normalize_e164(recipient.phone, region)
            except InvalidPhoneNumber as exc:
                errors.append(
                    ErrorItem([*loc, recipient.phone_field], str(exc), "value_error.phone")
                )
        elif not recipient.whatsapp_user_id:
            errors.append(
                ErrorItem(loc, "a recipient needs phone_number or whatsapp_user_id", "missing")
            )
        recipient_id = recipient.recipient_id or call_ids[index]
        if recipient_id in seen_ids:
            errors.append(
                ErrorItem([*loc, "id"], f"recipient id '{recipient_id}' is repeated", "duplicate")
            )
        seen_ids.add(recipient_id)
        missing = missing_tags(
            [*loc, *recipient.values_loc], recipient.needed, recipient.values.keys()
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
                recipient.client_data,
                CallStatus.PENDING,
                None,
                None,
                recipient.metadata,
            ]
        )
    if errors:
        raise ValidationFailed(errors)
    return rows
