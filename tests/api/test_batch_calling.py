"""The batch-calling API against a running stack: contract, validation, isolation."""

from __future__ import annotations

import time

import httpx
from twilio.request_validator import RequestValidator

from shared.settings import SANDBOX_AUTH_TOKEN
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, wait_for

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

SEED_BATCH_FIELDS = {
    "id",
    "name",
    "agent_id",
    "created_at_unix",
    "scheduled_time_unix",
    "last_updated_at_unix",
    "status",
    "agent_name",
    "phone_number_id",
    "phone_provider",
    "whatsapp_params",
    "total_calls_dispatched",
    "total_calls_scheduled",
    "total_calls_finished",
    "retry_count",
}


def batch_rows(stack: Stack, api_key_client: httpx.Client) -> int:
    response = api_key_client.get("/v1/voiceai/batch-calling/workspace")
    assert response.status_code == 200
    return len(response.json()["batch_calls"])


def call_rows(stack: Stack) -> int:
    return int(stack.sql("SELECT count(*) FROM calls")[0][0])


def wait_final(client: httpx.Client, batch_id: str, timeout: float = 60) -> dict:
    def done() -> dict | None:
        body = client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"batch {batch_id} to end")


def test_submit_returns_the_seed_shape_and_the_batch_completes(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = recipients(3, prefix="+1646555", start=100)
    people[0]["id"] = "customer-42"
    response = submit(
        client,
        agent_id,
        number_id,
        people,
        telephony_call_config={"ringing_timeout_secs": 30},
        timezone="UTC",
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch.keys() >= SEED_BATCH_FIELDS
    assert batch["status"] in ("pending", "in_progress")
    assert batch["phone_provider"] == "twilio" and batch["phone_number_id"] == number_id
    assert batch["agent_name"] == "Collections"
    assert batch["total_calls_scheduled"] == 3
    assert batch["telephony_call_config"] == {"ringing_timeout_secs": 30}

    final = wait_final(client, batch["id"])
    assert final["status"] == "completed"
    assert final["total_calls_dispatched"] == 3 and final["total_calls_finished"] == 3
    assert final["retry_count"] == 0
    assert final["last_updated_at_unix"] >= final["created_at_unix"]
    first = final["recipients"][0]
    assert first["id"] == "customer-42"
    assert first["status"] == "completed" and first["outcome"] == "answered"
    assert first["conversation_id"] and first["provider_call_sid"].startswith("CA")
    assert first["conversation_initiation_client_data"]["dynamic_variables"]["first_name"] == (
        "Name100"
    )


def test_rendered_prompt_is_served_to_the_runtime_through_the_twiml(
    stack: Stack, client: httpx.Client
):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = recipients(1, prefix="+1646555", start=200)
    batch = submit(client, agent_id, number_id, people).json()
    wait_final(client, batch["id"])
    record = wait_for(
        lambda: next(
            (
                c
                for c in stack.carrier.calls()
                if c["to"] == "+16465550200" and c.get("agent_config")
            ),
            None,
        ),
        20,
        what="the carrier to fetch TwiML and agent config",
    )
    assert "agent_config_url" in record["twiml"]
    config = record["agent_config"]
    assert config["prompt"] == "You are calling Name200 about an invoice of $0.00."
    assert config["first_message"] == "Hello Name200!"


def test_convai_prefix_serves_the_same_api(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    body = {
        "call_name": "el",
        "agent_id": agent_id,
        "agent_phone_number_id": number_id,
        "recipients": recipients(1, prefix="+1646555", start=300),
        "target_concurrency_limit": 5,
    }
    response = client.post("/v1/convai/batch-calling/submit", json=body)
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    assert response.json()["target_concurrency_limit"] == 5
    assert client.get(f"/v1/convai/batch-calling/{batch_id}").status_code == 200


def test_too_many_recipients_is_rejected_and_nothing_written(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = [
        {
            "phone_number": "+12125550000",
            "conversation_initiation_client_data": {
                "dynamic_variables": {"first_name": "x", "amount": "1"}
            },
        }
    ] * 10_001
    before = call_rows(stack)
    response = submit(client, agent_id, number_id, people)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "recipients"]
    assert set(detail[0]) == {"loc", "msg", "type"}
    assert batch_rows(stack, client) == 0
    assert call_rows(stack) == before


def test_bad_number_and_missing_tag_are_named_by_index(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = recipients(4, prefix="+1646555", start=400)
    people[2]["phone_number"] = "+1 555 NOT A NUMBER"
    del people[3]["conversation_initiation_client_data"]["dynamic_variables"]["amount"]
    before = call_rows(stack)
    response = submit(client, agent_id, number_id, people)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {"loc": ["body", "recipients", 2, "phone_number"]}.items() <= detail[0].items()
    assert detail[1]["loc"] == [
        "body",
        "recipients",
        3,
        "conversation_initiation_client_data",
        "dynamic_variables",
    ]
    assert "'amount'" in detail[1]["msg"]
    assert batch_rows(stack, client) == 0
    assert call_rows(stack) == before


def test_unknown_agent_and_number_are_clear_errors(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = recipients(1)
    response = submit(client, "agent_does_not_exist", number_id, people)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "agent_id"]
    response = submit(client, agent_id, "phnum_nope", people)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "agent_phone_number_id"]
    # Every provider dials now; a pool mixing two providers' numbers is still refused.
    vobiz = register_number(client, "+12125550199", provider="vobiz")
    response = submit(client, agent_id, number_id, people, agent_phone_number_ids=[vobiz])
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "mixed_provider_accounts"
    assert batch_rows(stack, client) == 0


def test_caller_pool_is_checked_number_by_number(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    first = register_number(client, "+12025550100")
    second = register_number(client, "+12025550101")
    people = recipients(1)
    response = submit(
        client, agent_id, first, people, agent_phone_number_ids=[second, "phnum_nope", first]
    )
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "agent_phone_number_ids", 1]]
    connection = client.post(
        "/v1/provider-connections",
        json={
            "provider": "twilio",
            "name": "second account",
            "account_sid": "AC" + "2" * 32,
            "auth_token": "second-token",
        },
    ).json()["id"]
    other_account = client.post(
        "/v1/voiceai/phone-numbers",
        json={"phone_number": "+12025550102", "provider": "twilio", "credentials_ref": connection},
    ).json()["phone_number_id"]
    response = submit(client, agent_id, None, people, agent_phone_number_ids=[first, other_account])
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["type"] == "mixed_provider_accounts"
    assert "provider connection" in error["msg"]
    assert batch_rows(stack, client) == 0

    # The pool keeps its order, drops repeats, and starts with agent_phone_number_id.
    response = submit(client, agent_id, second, people, agent_phone_number_ids=[first, second])
    assert response.status_code == 200, response.text
    batch = client.get(f"/v1/voiceai/batch-calling/{response.json()['id']}").json()
    assert batch["phone_number_id"] == second
    assert batch["phone_number_ids"] == [second, first]
    assert batch["phone_provider"] == "twilio"


def test_missing_or_wrong_key_is_401_and_writes_nothing(stack: Stack, client: httpx.Client):
    body = {
        "call_name": "no key",
        "agent_id": create_agent(client),
        "agent_phone_number_id": register_number(client),
        "recipients": recipients(2, prefix="+1646555", start=420),
    }
    before = call_rows(stack)
    with stack.raw_client() as anonymous:
        for headers in ({}, {"x-api-key": "sb_wrong"}, {"Authorization": "Bearer sb_wrong"}):
            response = anonymous.post(
                "/v1/voiceai/batch-calling/submit", json=body, headers=headers
            )
            assert response.status_code == 401, headers
            assert response.json()["detail"][0]["type"] == "unauthorized"
        response = anonymous.get(
            "/v1/voiceai/batch-calling/workspace", headers={"x-api-key": "sb_wrong"}
        )
        assert response.status_code == 401
    assert batch_rows(stack, client) == 0
    assert call_rows(stack) == before


def test_bearer_header_works_too(stack: Stack, api_key: str):
    with stack.raw_client() as http:
        response = http.get(
            "/v1/voiceai/batch-calling/workspace", headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status_code == 200


def test_other_workspace_ids_answer_404(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    batch = submit(client, agent_id, number_id, recipients(1, "+1646555", 500)).json()
    with stack.client(new_api_key(stack)) as stranger:
        assert stranger.get(f"/v1/voiceai/batch-calling/{batch['id']}").status_code == 404
        assert stranger.get(f"/v1/voiceai/agents/{agent_id}").status_code == 404
        assert stranger.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"] == []
        response = submit(stranger, agent_id, None, recipients(1))
        assert response.status_code == 422


def test_idempotency_key_returns_the_first_batch(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    people = recipients(2, prefix="+1646555", start=600)
    body = {
        "call_name": "once",
        "agent_id": agent_id,
        "agent_phone_number_id": number_id,
        "recipients": people,
    }
    headers = {"Idempotency-Key": "retry-me-1"}
    first = client.post("/v1/voiceai/batch-calling/submit", json=body, headers=headers)
    second = client.post("/v1/voiceai/batch-calling/submit", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert batch_rows(stack, client) == 1
    other = dict(body, call_name="different")
    conflict = client.post("/v1/voiceai/batch-calling/submit", json=other, headers=headers)
    assert conflict.status_code == 409
    wait_final(client, first.json()["id"])
    dialed = [c["to"] for c in stack.carrier.calls() if c["to"] in ("+16465550600", "+16465550601")]
    assert sorted(dialed) == ["+16465550600", "+16465550601"]


def test_workspace_listing_is_newest_first_with_a_cursor(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    other_agent = create_agent(client)
    number_id = register_number(client)
    later = int(time.time()) + 3600  # scheduled: nothing is dialed
    ids = [
        submit(
            client,
            agent_id if i < 3 else other_agent,
            number_id,
            recipients(1),
            scheduled_time_unix=later,
        ).json()["id"]
        for i in range(5)
    ]
    page = client.get("/v1/voiceai/batch-calling/workspace", params={"limit": 2}).json()
    assert [b["id"] for b in page["batch_calls"]] == ids[::-1][:2]
    assert page["has_more"] is True and page["next_doc"] == ids[3]
    rest = client.get(
        "/v1/voiceai/batch-calling/workspace", params={"limit": 10, "last_doc": page["next_doc"]}
    ).json()
    assert [b["id"] for b in rest["batch_calls"]] == ids[::-1][2:]
    assert rest["has_more"] is False and rest["next_doc"] is None
    mine = client.get(
        "/v1/voiceai/batch-calling/workspace", params={"agent_id": other_agent}
    ).json()
    assert [b["id"] for b in mine["batch_calls"]] == ids[::-1][:2]
    assert all(b["status"] == "pending" for b in rest["batch_calls"])


def test_whatsapp_only_recipient_ends_failed_with_a_clear_outcome(
    stack: Stack, client: httpx.Client
):
    agent_id = create_agent(client, prompt="Hi", first_message="Hello")
    response = submit(client, agent_id, None, [{"whatsapp_user_id": "wa-123"}])
    assert response.status_code == 200, response.text
    final = wait_final(client, response.json()["id"])
    assert final["status"] == "completed"
    recipient = final["recipients"][0]
    assert recipient["whatsapp_user_id"] == "wa-123"
    assert (recipient["status"], recipient["outcome"]) == ("failed", "whatsapp_unsupported")
    # Never dialed: no attempt, and nothing in its attempt history.
    assert recipient["attempts"] == 0 and recipient["attempt_history"] == []
    assert final["total_calls_finished"] == 1 and final["total_calls_dispatched"] == 0


def test_forged_twilio_signature_is_403_and_changes_nothing(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    batch = submit(
        client,
        agent_id,
        number_id,
        recipients(1, "+1646555", 700),
        scheduled_time_unix=int(time.time()) + 3600,
    ).json()
    call_id = stack.sql("SELECT id FROM calls WHERE batch_id = %s", batch["id"])[0][0]
    url = f"{stack.api_url}/v1/telephony/twilio/status/{call_id}"
    params = {
        "AccountSid": "AC00000000000000000000000000000000",
        "CallSid": "CAforged",
        "CallStatus": "completed",
        "CallDuration": "5",
    }
    forged = RequestValidator("not-the-token").compute_signature(url, params)
    with stack.raw_client() as http:
        response = http.post(url, data=params, headers={"X-Twilio-Signature": forged})
        assert response.status_code == 403
        assert response.json()["detail"][0]["loc"] == ["header", "X-Twilio-Signature"]
        assert http.post(url, data=params).status_code == 403
        # The same callback as multipart form data takes the framework's route: also refused.
        multipart = http.post(
            url,
            files={k: (None, v) for k, v in params.items()},
            headers={"X-Twilio-Signature": forged},
        )
        assert multipart.status_code == 403
        assert multipart.json()["detail"] == response.json()["detail"]
        genuine = RequestValidator(SANDBOX_AUTH_TOKEN).compute_signature(url, params)
        # A genuine signature is accepted (and ignored: the call was never dialed).
        assert (
            http.post(url, data=params, headers={"X-Twilio-Signature": genuine}).status_code == 204
        )
        assert http.post(url, content=b"x" * 70_000, headers=FORM).status_code == 413
    # A report the API acknowledged is in the status inbox until the transaction that applies
    # it deletes it: once none is left for the call, whatever was accepted has been applied.
    wait_for(
        lambda: (
            stack.sql("SELECT count(*) FROM status_inbox WHERE call_id = %s", call_id) == [(0,)]
        ),
        30,
        what="the accepted callback to be applied",
    )
    status = stack.sql("SELECT status, provider_call_sid FROM calls WHERE id = %s", call_id)
    assert status == [("pending", None)]
    assert (
        client.get(f"/v1/voiceai/batch-calling/{batch['id']}").json()["total_calls_finished"] == 0
    )


def test_agents_can_be_created_listed_updated(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    assert client.get(f"/v1/voiceai/agents/{agent_id}").json()["name"] == "Collections"
    changed = client.patch(f"/v1/voiceai/agents/{agent_id}", json={"name": "Reminders"})
    assert changed.status_code == 200 and changed.json()["name"] == "Reminders"
    assert changed.json()["prompt"].startswith("You are calling")
    listed = client.get("/v1/voiceai/agents").json()["agents"]
    assert [a["agent_id"] for a in listed] == [agent_id]
    assert client.get("/v1/voiceai/agents/agent_missing").status_code == 404
    bad = client.post("/v1/voiceai/agents", json={"name": ""})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]


def test_phone_numbers_are_normalised_and_listed(stack: Stack, client: httpx.Client):
    response = client.post(
        "/v1/voiceai/phone-numbers",
        json={"phone_number": "+1 (212) 555-0142", "provider": "twilio"},
    )
    assert response.status_code == 201 and response.json()["phone_number"] == "+12125550142"
    duplicate = client.post("/v1/voiceai/phone-numbers", json={"phone_number": "+12125550142"})
    assert duplicate.status_code == 409
    invalid = client.post("/v1/voiceai/phone-numbers", json={"phone_number": "12"})
    assert invalid.status_code == 422
    assert [n["phone_number"] for n in client.get("/v1/voiceai/phone-numbers").json()] == [
        "+12125550142"
    ]


def test_health_and_readiness(stack: Stack):
    with stack.raw_client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "database": "ok",
            "broker": "ok",
        }
        assert http.get("/openapi.json").json()["info"]["title"] == "Switchboard"
        assert http.get("/docs").status_code == 200
