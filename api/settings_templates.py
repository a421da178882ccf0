"""AI settings templates: ``/ai/settings-templates``. A template is an agent, named by its
``template_id`` (call-bulk's ``aiSettingsTemplateId``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.agents import agent_response
from api.deps import SessionDep, WorkspaceDep
from shared.agents import service
from shared.models import Agent
from shared.schemas import AgentCreate, SettingsTemplateListResponse, SettingsTemplateResponse

router = APIRouter(tags=["settings-templates"])


def _template(agent: Agent) -> SettingsTemplateResponse:
    return SettingsTemplateResponse(id=agent.template_id, **agent_response(agent).model_dump())


@router.post(
    "/settings-templates",
    status_code=201,
    response_model=SettingsTemplateResponse,
    summary="Create an AI settings template",
)
def create_template(
    body: AgentCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> SettingsTemplateResponse:
    """Create a template (an agent): prompt template, first message, language, LLM, voice."""
    return _template(service.create_agent(session, workspace_id, body))


@router.get(
    "/settings-templates",
    response_model=SettingsTemplateListResponse,
    summary="List AI settings templates",
)
def list_templates(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
    cursor: str | None = None,
) -> SettingsTemplateListResponse:
    """The workspace's templates (its agents), newest first; ``cursor`` is an ``agent_id``."""
    agents, has_more = service.list_agents(session, workspace_id, limit, cursor)
    return SettingsTemplateListResponse(
        templates=[_template(a) for a in agents],
        next_cursor=agents[-1].id if has_more and agents else None,
        has_more=has_more,
    )


@router.get(
    "/settings-templates/{template_id}",
    response_model=SettingsTemplateResponse,
    summary="Get an AI settings template",
)
def get_template(
    template_id: str, session: SessionDep, workspace_id: WorkspaceDep
) -> SettingsTemplateResponse:
    """One template, by its template id."""
    return _template(service.get_settings_template(session, workspace_id, template_id))
