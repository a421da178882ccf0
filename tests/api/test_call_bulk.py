"""call-bulk, AI settings templates and contacts against a running stack."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.config import Rule
from tests.conftest import new_api_key
from tests.factories import create_agent, register_number
from tests.support import Stack, wait_for

CALL_BULK = "/ai/phone-calls/action/call-bulk"
SEED_PROMPT = (
    "You are a collections agent. The customer owes {{amount}} due by {{due_date}}.\n"
    "Be professional and offer payment plan options if the customer cannot pay in full."
)
SEED_REQUEST: dict[str, Any] = {
    "aiSettingsTemplateId": "550e8400-e29b-41d4-a716-446655440000",
    "countryCode": "SA",
    "updateExisting": True,
    "batchSize": 50,
    "contacts": [
        {
            "numberToCall": "+966500000001",
            "firstName": "Ahmed",
            "lastName": "Al-Rashid",
            "metadata": {"invoiceNumber": "INV-001", "amount": "5000.00"},
            "promptTags": {"amount": "5,000 SAR", "due_date": "January 15, 2026"},
        },
        {
            "numberToCall": "+966500000002",
            "firstName": "Sara",
            "lastName": "Mohammed",
            "metadata": {"invoiceNumber": "INV-002", "amount": "3200.00"},
            "promptTags": {"amount": "3,200 SAR", "due_date": "January 20, 2026"},
        },
    ],
}
SEED_RESULTS = {
    "+966500000001": (
        "You are a collections agent. The customer owes 5,000 SAR due by January 15, 2026.\n"
        "Be professional and offer payment plan options if the customer cannot pay in full."
    ),
    "+966500000002": (
        "You are a collections agent. The customer owes 3,200 SAR due by January 20, 2026.\n"
        "Be professional and offer payment plan options if the customer cannot pay in full."
    ),
}


def template_id_of(client: httpx.Client, agent_id: str) -> str:
    response = client.get(f"/v1/voiceai/agents/{agent_id}")
    assert response.status_code == 200
    return str(response.json()["ai_settings_template_id"])


def seed_template(client: httpx.Client) -> str:
    """An agent with the seed's prompt and a caller number; the agent's template id."""
    agent_id = create_agent(client, prompt=SEED_PROMPT, first_message="Hello.")
    register_number(client)
    return template_id_of(client, agent_id)


def seed_body(template_id: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED_REQUEST)
    body["aiSettingsTemplateId"] = template_id
    body.update(changes)
    return body


def wait_final(client: httpx.Client, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"batch {batch_id} to end")


def contacts_by_number(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/ai/contacts")
    assert response.status_code == 200
    return {c["phone_number"]: c for c in response.json()["contacts"]}


def nothing_written(client: httpx.Client) -> bool:
    batches = client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"]
    contacts = client.get("/ai/contacts").json()["contacts"]
    return batches == [] and contacts == []


def test_seed_example_places_calls_with_rendered_prompts_and_stores_contacts(
    stack: Stack, client: httpx.Client
):
    template_id = seed_template(client)
    response = client.post(CALL_BULK, json=seed_body(template_id))
    assert response.status_code == 201, response.text
    result = response.json()
    assert set(result) == {"batch_id", "call_ids", "status"}
    assert len(result["call_ids"]) == 2
    assert result["status"] in ("pending", "in_progress")

    final = wait_final(client, result["batch_id"])
    assert final["status"] == "completed"
    assert final["name"].startswith("call-bulk ")
    assert final["total_calls_dispatched"] == 2
    assert [r["conversation_id"] for r in final["recipients"]] == result["call_ids"]

    rows = stack.sql(
        "SELECT c.id, c.phone_number, c.rendered_prompt, c.request_metadata, c.contact_id, "
        "c.provider_call_sid FROM calls c WHERE c.batch_id = %s ORDER BY c.position",
        result["batch_id"],
    )
    assert [r[0] for r in rows] == result["call_ids"]
    for (_, phone, prompt, metadata, contact_id, sid), contact in zip(
        rows, SEED_REQUEST["contacts"], strict=True
    ):
        assert phone == contact["numberToCall"]
        assert prompt == SEED_RESULTS[phone]
        assert metadata == contact["metadata"]
        assert contact["metadata"]["invoiceNumber"] not in prompt
        assert contact_id is not None
        placed = wait_for(
            lambda sid=sid: next(
                (c for c in stack.carrier.calls() if c["sid"] == sid and c.get("agent_config")),
                None,
            ),
            20,
            what="the carrier to fetch the agent config",
        )
        assert placed["to"] == phone
        assert placed["agent_config"]["prompt"] == SEED_RESULTS[phone]
    assert stack.sql(
        "SELECT fan_out_chunk_size FROM batches WHERE id = %s", result["batch_id"]
    ) == [(50,)]

    contacts = contacts_by_number(client)
    assert {n: (c["first_name"], c["last_name"]) for n, c in contacts.items()} == {
        "+966500000001": ("Ahmed", "Al-Rashid"),
        "+966500000002": ("Sara", "Mohammed"),
    }

    renamed = seed_body(template_id, updateExisting=False)
    renamed["contacts"][0]["firstName"] = "Ahmad"
    renamed["contacts"][1]["lastName"] = "Mohamed"
    assert client.post(CALL_BULK, json=renamed).status_code == 201
    unchanged = contacts_by_number(client)
    assert unchanged["+966500000001"]["first_name"] == "Ahmed"
    assert unchanged["+966500000002"]["last_name"] == "Mohammed"
    assert {c["id"] for c in unchanged.values()} == {c["id"] for c in contacts.values()}

    renamed["updateExisting"] = True
    del renamed["contacts"][1]["firstName"]  # not given: left as it is
    assert client.post(CALL_BULK, json=renamed).status_code == 201
    updated = contacts_by_number(client)
    assert (updated["+966500000001"]["first_name"], updated["+966500000001"]["last_name"]) == (
        "Ahmad",
        "Al-Rashid",
    )
    assert (updated["+966500000002"]["first_name"], updated["+966500000002"]["last_name"]) == (
        "Sara",
        "Mohamed",
    )
    detail = client.get(f"/ai/contacts/{updated['+966500000001']['id']}").json()
    assert len(detail["calls"]) == 3
    assert all(
        c["request_metadata"] == {"invoiceNumber": "INV-001", "amount": "5000.00"}
        for c in detail["calls"]
    )


def _without(field: str) -> Any:
    def change(body: dict[str, Any]) -> None:
        del body[field]

    return change


def _set(field: str, value: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        body[field] = value

    return change


def _contact(index: int, field: str, value: Any = None, delete: bool = False) -> Any:
    def change(body: dict[str, Any]) -> None:
        if delete:
            del body["contacts"][index][field]
        else:
            body["contacts"][index][field] = value

    return change


def _many_contacts(body: dict[str, Any]) -> None:
    body["contacts"] = [body["contacts"][0]] * 10_001


INVALID_BODIES = {
    "missing contacts": (_without("contacts"), ["body", "contacts"]),
    "empty contacts": (_set("contacts", []), ["body", "contacts"]),
    "contacts not a list": (_set("contacts", "x"), ["body", "contacts"]),
    "no numberToCall": (
        _contact(1, "numberToCall", delete=True),
        ["body", "contacts", 1, "numberToCall"],
    ),
    "invalid numberToCall": (
        _contact(1, "numberToCall", "not-a-number"),
        ["body", "contacts", 1, "numberToCall"],
    ),
    "too short numberToCall": (
        _contact(0, "numberToCall", "+96612"),
        ["body", "contacts", 0, "numberToCall"],
    ),
    "local number without countryCode": (
        lambda body: (_contact(1, "numberToCall", "0500000002")(body), body.pop("countryCode")),
        ["body", "contacts", 1, "numberToCall"],
    ),
    "lowercase countryCode": (_set("countryCode", "sa"), ["body", "countryCode"]),
    "alpha-3 countryCode": (_set("countryCode", "SAU"), ["body", "countryCode"]),
    "unknown countryCode": (_set("countryCode", "XX"), ["body", "countryCode"]),
    "batchSize 9": (_set("batchSize", 9), ["body", "batchSize"]),
    "batchSize 1001": (_set("batchSize", 1001), ["body", "batchSize"]),
    "batchSize fraction": (_set("batchSize", 12.5), ["body", "batchSize"]),
    "batchSize text": (_set("batchSize", "ten"), ["body", "batchSize"]),
    "template id not a UUID": (
        _set("aiSettingsTemplateId", "not-a-uuid"),
        ["body", "aiSettingsTemplateId"],
    ),
    "unknown template id": (
        _set("aiSettingsTemplateId", str(uuid.uuid4())),
        ["body", "aiSettingsTemplateId"],
    ),
    "updateExisting not a boolean": (_set("updateExisting", "maybe"), ["body", "updateExisting"]),
    "updateExisting a string": (_set("updateExisting", "true"), ["body", "updateExisting"]),
    "metadata not an object": (
        _contact(0, "metadata", ["INV-001"]),
        ["body", "contacts", 0, "metadata"],
    ),
    "promptTags missing a tag": (
        _contact(1, "promptTags", {"amount": "3,200 SAR"}),
        ["body", "contacts", 1, "promptTags"],
    ),
    "promptTags absent": (
        _contact(0, "promptTags", delete=True),
        ["body", "contacts", 0, "promptTags"],
    ),
    "promptTags value not a string": (
        _contact(0, "promptTags", {"amount": 5000, "due_date": "January 15, 2026"}),
        ["body", "contacts", 0, "promptTags", "amount"],
    ),
    "more than 10,000 contacts": (_many_contacts, ["body", "contacts"]),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES), ids=list(INVALID_BODIES))
def test_invalid_bodies_are_422_at_the_field_and_nothing_is_written(
    stack: Stack, client: httpx.Client, case: str
):
    change, loc = INVALID_BODIES[case]
    body = seed_body(seed_template(client))
    change(body)
    response = client.post(CALL_BULK, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [loc]
    assert set(detail[0]) == {"loc", "msg", "type"}
    assert nothing_written(client)


def test_every_bad_contact_is_named_by_index(stack: Stack, client: httpx.Client):
    body = seed_body(seed_template(client))
    body["contacts"] = [
        *body["contacts"],
        {"numberToCall": "12", "promptTags": {"amount": "1", "due_date": "x"}},
        {"numberToCall": "+966500000004", "promptTags": {}},
    ]
    response = client.post(CALL_BULK, json=body)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [
        ["body", "contacts", 2, "numberToCall"],
        ["body", "contacts", 3, "promptTags"],
    ]
    assert "'amount', 'due_date'" in response.json()["detail"][1]["msg"]
    assert nothing_written(client)


def test_without_a_template_id_the_oldest_agent_is_used(stack: Stack, client: httpx.Client):
    body = seed_body("x")
    del body["aiSettingsTemplateId"]
    response = client.post(CALL_BULK, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "aiSettingsTemplateId"]

    oldest = create_agent(client, prompt=SEED_PROMPT, first_message="")
    create_agent(client, prompt="Another {{thing}}", first_message="")
    register_number(client)
    response = client.post(CALL_BULK, json=body)
    assert response.status_code == 201, response.text
    batch = client.get(f"/v1/voiceai/batch-calling/{response.json()['batch_id']}").json()
    assert batch["agent_id"] == oldest


def test_without_a_caller_number_nothing_is_written(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client, prompt=SEED_PROMPT, first_message="")
    response = client.post(CALL_BULK, json=seed_body(template_id_of(client, agent_id)))
    assert response.status_code == 422
    assert nothing_written(client)


def test_local_numbers_metadata_free_contacts_and_repeats(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client, prompt="Hi {{name}}", first_message="")
    register_number(client)
    tags = {"promptTags": {"name": "A"}}
    body = {
        "aiSettingsTemplateId": template_id_of(client, agent_id),
        "countryCode": "SA",
        "contacts": [
            {"numberToCall": "0500000011", "email": "a@example.com", **tags},
            {"numberToCall": "+966500000011", "firstName": "Second", **tags},
            {"numberToCall": "+12125550199", **tags},
        ],
    }
    response = client.post(CALL_BULK, json=body)
    assert response.status_code == 201, response.text
    result = response.json()
    final = wait_final(client, result["batch_id"])
    assert [r["phone_number"] for r in final["recipients"]] == [
        "+966500000011",
        "+966500000011",
        "+12125550199",
    ]
    # The repeat of a number in one request is not dialed twice (as in batch-calling).
    assert final["recipients"][1]["outcome"] == "duplicate"
    contacts = contacts_by_number(client)
    assert set(contacts) == {"+966500000011", "+12125550199"}
    saudi = contacts["+966500000011"]
    assert (saudi["first_name"], saudi["email"]) == ("Second", "a@example.com")
    links = stack.sql(
        "SELECT contact_id, request_metadata FROM calls WHERE batch_id = %s ORDER BY position",
        result["batch_id"],
    )
    assert links[0][0] == links[1][0] == saudi["id"]
    assert all(metadata is None for _, metadata in links)


def test_idempotency_key_returns_the_first_call_bulk(stack: Stack, client: httpx.Client):
    body = seed_body(seed_template(client))
    headers = {"Idempotency-Key": f"bulk-{uuid.uuid4().hex}"}
    first = client.post(CALL_BULK, json=body, headers=headers)
    again = client.post(CALL_BULK, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert again.json()["call_ids"] == first.json()["call_ids"]
    batches = client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"]
    assert len(batches) == 1
    other = client.post(
        CALL_BULK, json=seed_body(body["aiSettingsTemplateId"], batchSize=20), headers=headers
    )
    assert other.status_code == 409


def test_contacts_listing_detail_isolation_and_both_auth_headers(
    stack: Stack, client: httpx.Client, api_key: str
):
    body = seed_body(seed_template(client))
    result = client.post(CALL_BULK, json=body).json()
    wait_final(client, result["batch_id"])

    first_page = client.get("/ai/contacts", params={"limit": 1}).json()
    assert first_page["has_more"] is True and len(first_page["contacts"]) == 1
    second_page = client.get(
        "/ai/contacts", params={"limit": 1, "last_doc": first_page["next_doc"]}
    ).json()
    assert second_page["has_more"] is False and second_page["next_doc"] is None
    listed = first_page["contacts"] + second_page["contacts"]
    assert listed[0]["id"] > listed[1]["id"]
    assert {c["phone_number"] for c in listed} == {"+966500000001", "+966500000002"}

    sara = next(c for c in listed if c["phone_number"] == "+966500000002")
    detail = client.get(f"/ai/contacts/{sara['id']}").json()
    assert detail["first_name"] == "Sara" and detail["last_name"] == "Mohammed"
    [call] = detail["calls"]
    assert call["call_id"] == result["call_ids"][1]
    assert call["batch_id"] == result["batch_id"]
    assert call["status"] == "completed" and call["outcome"] == "answered"
    assert call["attempts"] == 1 and call["provider_call_sid"].startswith("CA")
    assert call["request_metadata"] == {"invoiceNumber": "INV-002", "amount": "3200.00"}
    assert call["updated_at_unix"] >= call["created_at_unix"]

    with stack.raw_client() as http:
        bearer = {"Authorization": f"Bearer {api_key}"}
        assert http.get(f"/ai/contacts/{sara['id']}", headers=bearer).status_code == 200
        assert http.get("/ai/contacts", headers={"x-api-key": api_key}).status_code == 200
        assert http.get("/ai/contacts").status_code == 401
        bulk = http.post(CALL_BULK, json=body, headers=bearer)
        assert bulk.status_code == 201, bulk.text

    with stack.client(new_api_key(stack)) as stranger:
        assert stranger.get(f"/ai/contacts/{sara['id']}").status_code == 404
        assert stranger.get("/ai/contacts").json()["contacts"] == []
        assert stranger.get(f"/v1/voiceai/batch-calling/{result['batch_id']}").status_code == 404
        response = stranger.post(CALL_BULK, json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "aiSettingsTemplateId"]


def test_settings_templates_are_agents(stack: Stack, client: httpx.Client):
    created = client.post(
        "/ai/settings-templates",
        json={"name": "Collections", "prompt": SEED_PROMPT, "language": "ar", "llm": "gpt-4o"},
    )
    assert created.status_code == 201, created.text
    template = created.json()
    uuid.UUID(template["id"])
    assert template["id"] == template["ai_settings_template_id"]
    assert template["prompt"] == SEED_PROMPT and template["language"] == "ar"

    agent = client.get(f"/v1/voiceai/agents/{template['agent_id']}").json()
    assert agent["ai_settings_template_id"] == template["id"]
    fetched = client.get(f"/ai/settings-templates/{template['id']}")
    assert fetched.status_code == 200 and fetched.json() == template
    listed = client.get("/ai/settings-templates").json()["templates"]
    assert [t["id"] for t in listed] == [template["id"]]
    assert client.get(f"/ai/settings-templates/{uuid.uuid4()}").status_code == 404
    with stack.client(new_api_key(stack)) as stranger:
        assert stranger.get(f"/ai/settings-templates/{template['id']}").status_code == 404

    register_number(client)
    response = client.post(CALL_BULK, json=seed_body(template["id"]))
    assert response.status_code == 201, response.text


@pytest.fixture
def talking_calls(stack: Stack) -> Iterator[None]:
    """The shared carrier, with the calls of the numbers below talking for two seconds (other
    numbers keep their behaviour): their batch is still running when it is paused right after
    it was created. Restored afterwards."""
    before = stack.carrier.config
    rule = Rule(pattern="+121255530[0-2][0-9]", talk_seconds=2.0)
    stack.carrier.configure(dataclasses.replace(before, rules=[rule, *before.rules]))
    yield
    stack.carrier.configure(before)


def test_call_bulk_batch_is_managed_through_batch_calling(
    stack: Stack, client: httpx.Client, talking_calls: None
):
    template_id = seed_template(client)
    body = seed_body(template_id, batchSize=10)
    body["contacts"] = [
        {
            "numberToCall": f"+1212555{3000 + i:04d}",
            "promptTags": {"amount": f"{i} USD", "due_date": "May 1"},
        }
        for i in range(30)
    ]
    result = client.post(CALL_BULK, json=body).json()
    # A pending or running batch can be paused; none of its calls can have ended yet.
    paused = client.post(f"/v1/voiceai/batch-calling/{result['batch_id']}/pause")
    assert paused.status_code == 200, paused.text
    state = client.get(f"/v1/voiceai/batch-calling/{result['batch_id']}").json()
    assert state["id"] == result["batch_id"]
    assert state["total_calls_scheduled"] == 30
    assert state["paused"] is True and state["status"] in ("pending", "in_progress")
    resumed = client.post(f"/v1/voiceai/batch-calling/{result['batch_id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    final = wait_final(client, result["batch_id"])
    assert final["status"] == "completed" and final["total_calls_dispatched"] == 30


def test_openapi_documents_the_new_endpoints(stack: Stack):
    with stack.raw_client() as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {CALL_BULK, "/ai/contacts/{contact_id}", "/ai/settings-templates/{template_id}"} <= set(
        paths
    )
