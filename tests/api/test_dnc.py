"""The do-not-call list and duplicates within a batch."""

from __future__ import annotations

import time

import httpx

from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, wait_for


def final_batch(client: httpx.Client, batch_id: str) -> dict:
    return wait_for(
        lambda: (lambda b: b if b["status"] in ("completed", "failed") else None)(
            client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        ),
        60,
        what="the batch to end",
    )


def test_dnc_list_can_be_managed(stack: Stack, client: httpx.Client):
    added = client.post("/v1/voiceai/dnc", json={"phone_number": "+1 (212) 555-1501"})
    assert added.status_code == 201 and added.json()["phone_number"] == "+12125551501"
    bulk = client.post(
        "/v1/convai/dnc/import",
        json={"phone_numbers": ["+12125551502", "+12125551503", "+12125551501"]},
    )
    assert bulk.status_code == 200 and bulk.json() == {"received": 3, "added": 2}
    bad = client.post("/v1/voiceai/dnc/import", json={"phone_numbers": ["+12125551504", "nope"]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "phone_numbers", 1]
    page = client.get("/v1/voiceai/dnc", params={"limit": 2}).json()
    assert [n["phone_number"] for n in page["numbers"]] == ["+12125551501", "+12125551502"]
    assert page["has_more"] is True
    rest = client.get("/v1/voiceai/dnc", params={"cursor": page["next_cursor"]}).json()
    assert [n["phone_number"] for n in rest["numbers"]] == ["+12125551503"]
    assert client.delete("/v1/voiceai/dnc/+12125551502").status_code == 204
    assert client.delete("/v1/voiceai/dnc/+12125551502").status_code == 404


def test_listed_and_repeated_numbers_are_kept_but_never_dialed(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    client.post("/v1/voiceai/dnc", json={"phone_number": "+16465551601"})
    people = recipients(3, "+1646555", 1600)
    people.append(dict(people[0]))  # the same number again
    response = submit(client, agent_id, number_id, people)
    assert response.status_code == 200, response.text
    batch = final_batch(client, response.json()["id"])
    outcomes = [(r["status"], r["outcome"]) for r in batch["recipients"]]
    assert outcomes == [
        ("completed", "answered"),
        ("cancelled", "dnc"),
        ("completed", "answered"),
        ("cancelled", "duplicate"),
    ]
    assert batch["total_calls_dispatched"] == 2 and batch["total_calls_finished"] == 2
    dialed = [c["to"] for c in stack.carrier.calls() if c["to"].startswith("+164655516")]
    assert sorted(dialed) == ["+16465551600", "+16465551602"]


def test_number_listed_after_submit_is_not_dialed(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    batch_id = submit(
        client,
        agent_id,
        number_id,
        recipients(2, "+1646555", 1700),
        scheduled_time_unix=int(time.time()) + 3,
    ).json()["id"]
    client.post("/v1/voiceai/dnc", json={"phone_number": "+16465551701"})
    batch = final_batch(client, batch_id)
    assert [(r["status"], r["outcome"]) for r in batch["recipients"]] == [
        ("completed", "answered"),
        ("cancelled", "dnc"),
    ]
    assert not [c for c in stack.carrier.calls() if c["to"] == "+16465551701"]


def test_batch_with_nobody_to_dial_completes(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    client.post("/v1/voiceai/dnc", json={"phone_number": "+16465551800"})
    batch_id = submit(client, agent_id, number_id, recipients(1, "+1646555", 1800)).json()["id"]
    batch = final_batch(client, batch_id)
    assert batch["status"] == "completed" and batch["total_calls_finished"] == 0
