"""Agents and caller phone numbers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import SessionDep, WorkspaceDep
from api.responses import CONFLICT
from shared.agents import service
from shared.models import Agent, PhoneNumber
from shared.schemas import (
    AgentCreate,
    AgentListResponse,
    AgentResponse,
    AgentUpdate,
    PhoneNumberCreate,
    PhoneNumberResponse,
)
from shared.schemas.trunks import OutboundTrunkConfigResponse
from shared.timestamps import unix
from shared.voicemail import VoicemailBehavior

router = APIRouter()


def agent_response(agent: Agent) -> AgentResponse:
    """The API's view of an agent."""
    return AgentResponse(
        agent_id=agent.id,
        name=agent.name,
        prompt=agent.prompt,
        first_message=agent.first_message,
        language=agent.language,
        llm=agent.llm,
        voice=agent.voice,
        voicemail_behavior=VoicemailBehavior(agent.voicemail_behavior),
        voicemail_message=agent.voicemail_message,
        ai_settings_template_id=agent.template_id,
        created_at_unix=unix(agent.created_at),
        updated_at_unix=unix(agent.updated_at),
    )


def _numbers(
    session: Session, workspace_id: str, numbers: list[PhoneNumber]
) -> list[PhoneNumberResponse]:
    trunks = service.outbound_trunks(session, workspace_id, numbers)
    return [_number(number, trunks.get(number.id)) for number in numbers]


def _number(
    number: PhoneNumber, trunk: OutboundTrunkConfigResponse | None = None
) -> PhoneNumberResponse:
    return PhoneNumberResponse(
        phone_number_id=number.id,
        phone_number=number.phone_number,
        provider=number.provider,  # type: ignore[arg-type]
        label=number.label,
        credentials_ref=number.credentials_ref,
        created_at_unix=unix(number.created_at),
        outbound_trunk_config=trunk,
    )


@router.post("/agents", status_code=201, response_model=AgentResponse, tags=["agents"])
def create_agent(
    body: AgentCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> AgentResponse:
    """Create an agent: prompt template, first message, language, LLM and voice."""
    return agent_response(service.create_agent(session, workspace_id, body))


@router.get("/agents", response_model=AgentListResponse, tags=["agents"])
def list_agents(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
    cursor: str | None = None,
) -> AgentListResponse:
    """The workspace's agents, newest first."""
    agents, has_more = service.list_agents(session, workspace_id, limit, cursor)
    return AgentListResponse(
        agents=[agent_response(a) for a in agents],
        next_cursor=agents[-1].id if has_more and agents else None,
        has_more=has_more,
    )


@router.get("/agents/{agent_id}", response_model=AgentResponse, tags=["agents"])
def get_agent(agent_id: str, session: SessionDep, workspace_id: WorkspaceDep) -> AgentResponse:
    """One agent."""
    return agent_response(service.get_agent(session, workspace_id, agent_id))


@router.patch("/agents/{agent_id}", response_model=AgentResponse, tags=["agents"])
def update_agent(
    agent_id: str, body: AgentUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> AgentResponse:
    """Change some of an agent's fields."""
    return agent_response(service.update_agent(session, workspace_id, agent_id, body))


@router.post(
    "/phone-numbers",
    status_code=201,
    response_model=PhoneNumberResponse,
    responses=CONFLICT,
    tags=["phone-numbers"],
)
def register_phone_number(
    body: PhoneNumberCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> PhoneNumberResponse:
    """Register a caller number (E.164) with its provider (a sip_trunk number with its
    outbound_trunk_config, whose credentials are never returned)."""
    number = service.register_phone_number(session, workspace_id, body)
    return _numbers(session, workspace_id, [number])[0]


@router.get("/phone-numbers", response_model=list[PhoneNumberResponse], tags=["phone-numbers"])
def list_phone_numbers(
    session: SessionDep, workspace_id: WorkspaceDep
) -> list[PhoneNumberResponse]:
    """The workspace's caller numbers."""
    return _numbers(session, workspace_id, service.list_phone_numbers(session, workspace_id))
