"""Agents and caller phone numbers."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.agents import repository as agents_repo
from shared.connections.service import check_credentials_ref
from shared.errors import Conflict, Loc, NotFound, ValidationFailed
from shared.ids import new_id
from shared.models import Agent, PhoneNumber
from shared.phone_numbers import repository as numbers_repo
from shared.phone_numbers import trunks
from shared.phone_numbers.e164 import InvalidPhoneNumber, normalize_e164
from shared.schemas import AgentCreate, AgentUpdate, PhoneNumberCreate
from shared.schemas.trunks import OutboundTrunkConfigResponse
from shared.voicemail import lacks_message


def check_voicemail_message(behavior: str, message: str, loc: Loc) -> None:
    """422 at ``loc`` when leave_message is asked for with no message to leave."""
    if lacks_message(behavior, message):
        raise ValidationFailed.one(
            loc, "voicemail_behavior leave_message needs a voicemail_message", "missing"
        )


def create_agent(session: Session, workspace_id: str, body: AgentCreate) -> Agent:
    """Store a new agent."""
    check_voicemail_message(
        body.voicemail_behavior, body.voicemail_message, ["body", "voicemail_message"]
    )
    agent = Agent(
        id=new_id("agent"),
        workspace_id=workspace_id,
        name=body.name,
        prompt=body.prompt,
        first_message=body.first_message,
        language=body.language,
        llm=body.llm,
        voice=body.voice.model_dump(exclude_none=True),
        voicemail_behavior=body.voicemail_behavior,
        voicemail_message=body.voicemail_message,
    )
    return agents_repo.insert_agent(session, agent)


def get_agent(session: Session, workspace_id: str, agent_id: str) -> Agent:
    """The agent, or 404."""
    agent = agents_repo.get_agent(session, workspace_id, agent_id)
    if agent is None:
        raise NotFound(["path", "agent_id"], f"agent '{agent_id}' not found")
    return agent


def get_settings_template(session: Session, workspace_id: str, template_id: str) -> Agent:
    """The agent an AI settings template id names, or 404."""
    agent = agents_repo.get_agent_by_template_id(session, workspace_id, template_id)
    if agent is None:
        raise NotFound(["path", "template_id"], f"AI settings template '{template_id}' not found")
    return agent


def list_agents(
    session: Session, workspace_id: str, limit: int, cursor: str | None
) -> tuple[list[Agent], bool]:
    """One page of agents, newest first, and whether more follow."""
    rows = agents_repo.list_agents(session, workspace_id, limit + 1, cursor)
    return rows[:limit], len(rows) > limit


def update_agent(session: Session, workspace_id: str, agent_id: str, body: AgentUpdate) -> Agent:
    """Change the fields given in ``body``."""
    agent = get_agent(session, workspace_id, agent_id)
    changes = body.model_dump(exclude_unset=True)
    if "voice" in changes:
        changes["voice"] = body.voice.model_dump(exclude_none=True) if body.voice else {}
    check_voicemail_message(
        changes.get("voicemail_behavior", agent.voicemail_behavior),
        changes.get("voicemail_message", agent.voicemail_message),
        ["body", "voicemail_message"],
    )
    return agents_repo.update_agent(session, agent, changes)


def register_phone_number(
    session: Session, workspace_id: str, body: PhoneNumberCreate
) -> PhoneNumber:
    """Register a caller number, normalised to E.164, with the account it dials through:
    ``credentials_ref`` ``default`` (the environment's) or a provider connection of the
    workspace at the number's provider."""
    try:
        e164 = normalize_e164(body.phone_number)
    except InvalidPhoneNumber as exc:
        raise ValidationFailed.one(["body", "phone_number"], str(exc)) from exc
    config = body.outbound_trunk_config
    trunks.check_trunk_fields(body.provider, body.credentials_ref, config)
    check_credentials_ref(session, workspace_id, body.provider, body.credentials_ref)
    number_id = new_id("phnum")
    credentials_ref = body.credentials_ref
    if config is not None:
        # A sip_trunk number's trunk: a provider connection of its own (rolled back with the
        # number when the number is refused).
        credentials_ref = trunks.store_trunk(session, workspace_id, number_id, e164, config)
    number = PhoneNumber(
        id=number_id,
        workspace_id=workspace_id,
        phone_number=e164,
        provider=body.provider,
        label=body.label,
        credentials_ref=credentials_ref,
    )
    stored = numbers_repo.insert_phone_number(session, number)
    if stored is None:
        raise Conflict(["body", "phone_number"], f"{e164} is already registered")
    return stored


def list_phone_numbers(session: Session, workspace_id: str) -> list[PhoneNumber]:
    """The workspace's caller numbers."""
    return numbers_repo.list_phone_numbers(session, workspace_id)


def outbound_trunks(
    session: Session, workspace_id: str, numbers: list[PhoneNumber]
) -> dict[str, OutboundTrunkConfigResponse]:
    """The outbound trunks of the ``sip_trunk`` numbers among ``numbers`` (by number id), as
    the API shows them: without their credentials."""
    return trunks.trunks_of(session, workspace_id, numbers)
