"""Input that once answered 500 (or a body of another shape): now a 4xx in the seeds' shape,
with nothing written."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack


def assert_seed_error(response: httpx.Response, status: int, loc: list[object]) -> None:
    assert response.status_code == status, response.text
    [error] = response.json()["detail"]
    assert set(error) == {"loc", "msg", "type"} and error["loc"] == loc, error


@pytest.mark.parametrize("field", ["name", "prompt", "first_message", "language", "llm"])
def test_an_agent_field_set_to_null_is_a_422_and_changes_nothing(
    client: httpx.Client, field: str
) -> None:
    agent_id = create_agent(client)
    before = client.get(f"/v1/voiceai/agents/{agent_id}").json()
    response = client.patch(f"/v1/voiceai/agents/{agent_id}", json={field: None})
    assert response.status_code == 422, response.text
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]
    assert client.get(f"/v1/voiceai/agents/{agent_id}").json() == before


@pytest.mark.parametrize("when", [253_402_300_800, -1, -1_000_000_000_000, 2**63])
def test_a_schedule_outside_what_a_timestamp_holds_is_a_422(
    stack: Stack, client: httpx.Client, when: int
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(1), scheduled_time_unix=when)
    assert_seed_error(response, 422, ["body", "scheduled_time_unix"])
    assert client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"] == []


def test_a_concurrency_limit_beyond_what_is_stored_is_a_422(
    stack: Stack, client: httpx.Client
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(1), target_concurrency_limit=2**31)
    assert_seed_error(response, 422, ["body", "target_concurrency_limit"])
    assert client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"] == []


def test_unknown_routes_and_methods_answer_in_the_seeds_shape(client: httpx.Client) -> None:
    assert_seed_error(client.get("/v1/voiceai/no-such-thing"), 404, ["path"])
    wrong_method = client.put("/v1/voiceai/batch-calling/submit", json={})
    assert_seed_error(wrong_method, 405, ["path"])
    assert "POST" in wrong_method.headers["allow"]
