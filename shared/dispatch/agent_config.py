"""What the voice-agent runtime reads of a call: the rendered prompt and settings it runs with."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.dispatch import repository as calls_repo
from shared.errors import NotFound
from shared.schemas import AgentConfigResponse


def agent_config(session: Session, call_id: str) -> AgentConfigResponse:
    """The rendered prompt, first message and settings the voice-agent runtime runs a call with."""
    row = calls_repo.agent_config_row(session, call_id)
    if row is None or row.rendered_prompt is None:
        raise NotFound(["path", "call_id"], f"call '{call_id}' not found")
    data = row.client_data or {}
    return AgentConfigResponse(
        call_id=row.id,
        batch_id=row.batch_id,
        agent_id=row.agent_id,
        prompt=row.rendered_prompt,
        first_message=row.rendered_first_message or "",
        language=row.language,
        llm=row.llm,
        voice=row.voice or {},
        dynamic_variables=data.get("dynamic_variables") or {},
        conversation_config_override=row.rendered_override,
    )
