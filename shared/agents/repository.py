"""Agents: the prompt templates and voice settings calls are made with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.models import Agent


def insert_agent(session: Session, agent: Agent) -> Agent:
    """Add an agent and flush so its server defaults are loaded."""
    session.add(agent)
    session.flush()
    session.refresh(agent)
    return agent


def get_agent(session: Session, workspace_id: str, agent_id: str) -> Agent | None:
    """The agent, if it is in this workspace."""
    return session.execute(
        select(Agent).where(Agent.id == agent_id, Agent.workspace_id == workspace_id)
    ).scalar_one_or_none()


def get_agent_by_template_id(session: Session, workspace_id: str, template_id: str) -> Agent | None:
    """The agent whose AI settings template id this is, if it is in this workspace."""
    return session.execute(
        select(Agent).where(Agent.template_id == template_id, Agent.workspace_id == workspace_id)
    ).scalar_one_or_none()


def oldest_agent(session: Session, workspace_id: str) -> Agent | None:
    """The workspace's first agent (ids are time-ordered)."""
    return session.execute(
        select(Agent).where(Agent.workspace_id == workspace_id).order_by(Agent.id).limit(1)
    ).scalar_one_or_none()


def list_agents(
    session: Session, workspace_id: str, limit: int, before_id: str | None
) -> list[Agent]:
    """Newest first; ``before_id`` continues after that agent."""
    stmt = select(Agent).where(Agent.workspace_id == workspace_id)
    if before_id is not None:
        stmt = stmt.where(Agent.id < before_id)
    return list(session.execute(stmt.order_by(Agent.id.desc()).limit(limit)).scalars())


def update_agent(session: Session, agent: Agent, changes: dict[str, Any]) -> Agent:
    """Apply ``changes`` to the agent."""
    if changes:
        session.execute(
            update(Agent).where(Agent.id == agent.id).values(**changes, updated_at=func.now())
        )
        session.refresh(agent)
    return agent
