"""Small builders for API requests used across tests."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_PROMPT = "You are calling {{first_name}} about an invoice of <<amount>>."
DEFAULT_FIRST_MESSAGE = "Hello {{first_name}}!"


def create_agent(
    client: httpx.Client, prompt: str = DEFAULT_PROMPT, first_message: str = DEFAULT_FIRST_MESSAGE
) -> str:
    """An agent through the API; its id."""
    response = client.post(
        "/v1/voiceai/agents",
        json={
            "name": "Collections",
            "prompt": prompt,
            "first_message": first_message,
            "language": "en",
            "llm": "gpt-4o-mini",
            "voice": {"voice_id": "v1", "stability": 0.5, "speed": 1.0, "similarity_boost": 0.7},
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["agent_id"])


def register_number(
    client: httpx.Client,
    number: str = "+12025550100",
    provider: str = "twilio",
    **fields: Any,
) -> str:
    """A caller number through the API, with any other ``fields`` of the request (its
    ``credentials_ref``, a trunk's ``outbound_trunk_config``); its id."""
    body = {"phone_number": number, "provider": provider, "label": "main", **fields}
    response = client.post("/v1/voiceai/phone-numbers", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["phone_number_id"])


def create_connection(client: httpx.Client, connection: dict[str, Any]) -> str:
    """A provider connection through the API; its id."""
    response = client.post("/v1/provider-connections", json=connection)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def recipients(count: int, prefix: str = "+1212555", start: int = 0) -> list[dict[str, Any]]:
    """``count`` recipients with valid NANP test numbers and the default agent's variables.

    Tests sharing the session stack count the carrier's calls by number, so each test uses a
    range of numbers no other test uses (grep for its prefix and start before picking one).
    """
    return [
        {
            "phone_number": f"{prefix}{start + i:04d}",
            "conversation_initiation_client_data": {
                "dynamic_variables": {"first_name": f"Name{start + i}", "amount": f"${i}.00"}
            },
        }
        for i in range(count)
    ]


def submit(
    client: httpx.Client,
    agent_id: str,
    number_id: str | None,
    people: list[dict[str, Any]],
    **extra: Any,
) -> httpx.Response:
    """POST /submit with the given recipients."""
    body: dict[str, Any] = {
        "call_name": "test batch",
        "agent_id": agent_id,
        "recipients": people,
        **extra,
    }
    if number_id is not None:
        body["agent_phone_number_id"] = number_id
    return client.post("/v1/voiceai/batch-calling/submit", json=body)
