"""What an answered call gets, end to end on the shared stack: a person hears the agent at once
(asynchronous answering machine detection), and a machine gets the voicemail behaviour of the
batch, or of its agent: hung up on, or left the recipient's rendered message."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.config import Rule
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from shared.telephony.twilio import request_signature
from tests.conftest import new_api_key
from tests.factories import create_agent, register_number, submit
from tests.support import Stack, wait_for

HUMAN = "+1347555010"  # + a digit: answered by a person
MACHINE = "+1347555020"  # + a digit: answered by a machine, which would listen for a minute


@pytest.fixture(scope="module")
def carrier_rules(stack: Stack) -> Iterator[None]:
    """The shared carrier, with this module's numbers answered as they say (other numbers
    keep their behaviour); restored afterwards."""
    before = stack.carrier.config
    rules = [
        Rule(pattern=f"{HUMAN}*", outcome="completed", talk_seconds=1.0, amd_seconds=0.3),
        Rule(pattern=f"{MACHINE}*", outcome="voicemail", talk_seconds=60.0, amd_seconds=0.2),
    ]
    stack.carrier.configure(dataclasses.replace(before, rules=[*rules, *before.rules]))
    yield
    stack.carrier.configure(before)


@pytest.fixture(scope="module")
def workspace(stack: Stack, carrier_rules: None) -> Iterator[httpx.Client]:
    with stack.client(new_api_key(stack)) as client:
        register_number(client)
        yield client


def agent_with(client: httpx.Client, **voicemail: Any) -> str:
    agent_id = create_agent(client)
    response = client.patch(f"/v1/voiceai/agents/{agent_id}", json=voicemail)
    assert response.status_code == 200, response.text
    return agent_id


def person(number: str, first_name: str) -> dict[str, Any]:
    return {
        "phone_number": number,
        "conversation_initiation_client_data": {
            "dynamic_variables": {"first_name": first_name, "amount": "$5.00"}
        },
    }


def run_batch(
    stack: Stack, client: httpx.Client, agent_id: str, people: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """Submit, wait until every recipient is final; the batch detail."""
    response = submit(client, agent_id, None, people, **extra)
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]

    def done() -> dict[str, Any] | None:
        batch = client.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
        return batch if batch["status"] == "completed" else None

    return dict(wait_for(done, 30, what=f"batch {batch_id} to complete"))


def placed(stack: Stack, number: str) -> dict[str, Any]:
    (call,) = [c for c in stack.carrier.calls() if c["to"] == number]
    return call


def call_row(stack: Stack, number: str) -> tuple[Any, ...]:
    return stack.sql(
        "SELECT id, status, outcome, answered_by, voicemail_action FROM calls "
        "WHERE phone_number = %s",
        number,
    )[0]


def test_a_person_gets_the_agent_at_once_and_a_machine_is_hung_up_on(
    stack: Stack, workspace: httpx.Client
):
    agent_id = agent_with(workspace, voicemail_behavior="hang_up")
    human, machine = f"{HUMAN}1", f"{MACHINE}1"
    batch = run_batch(stack, workspace, agent_id, [person(human, "Grace"), person(machine, "Alan")])
    assert batch["voicemail_behavior"] == "hang_up"
    outcomes = {r["phone_number"]: (r["status"], r["outcome"]) for r in batch["recipients"]}
    assert outcomes == {human: ("completed", "answered"), machine: ("voicemail", "voicemail")}

    # Detection runs asynchronously: the call runs the agent's TwiML as soon as it is answered
    # (a stream to the voice-agent runtime), and the verdict comes to a callback of its own.
    for number in (human, machine):
        call = placed(stack, number)
        assert call["machine_detection"] == "Enable" and call["async_amd"]
        assert "/v1/telephony/twilio/amd/" in call["amd_callback"]
        assert "<Connect><Stream" in call["twiml"]
    # The person talked to the agent until the end; the machine was hung up on when detected,
    # not a minute later.
    assert placed(stack, human)["twiml_updates"] == []
    hung_up = placed(stack, machine)
    assert len(hung_up["twiml_updates"]) == 1 and "<Hangup/>" in hung_up["twiml_updates"][0]
    assert hung_up["said"] == [] and hung_up["duration"] < 10
    assert call_row(stack, human)[1:] == ("completed", "answered", "human", None)
    assert call_row(stack, machine)[1:] == ("voicemail", "voicemail", "machine_start", "hung_up")


def test_leave_message_set_on_the_batch_plays_each_recipients_message_then_hangs_up(
    stack: Stack, workspace: httpx.Client
):
    # The agent would hang up; the batch says to leave a message, and the batch wins.
    agent_id = agent_with(workspace, voicemail_behavior="hang_up")
    first, second = f"{MACHINE}2", f"{MACHINE}3"
    batch = run_batch(
        stack,
        workspace,
        agent_id,
        [person(first, "Ada"), person(second, "Edsger & co")],
        voicemail_behavior="leave_message",
        voicemail_message="Hi {{first_name}}, this is Acme about <<amount>>. Call us back.",
    )
    assert batch["voicemail_behavior"] == "leave_message"
    assert {r["outcome"] for r in batch["recipients"]} == {"voicemail_message_left"}
    assert {r["status"] for r in batch["recipients"]} == {"voicemail"}
    for number, name in ((first, "Ada"), (second, "Edsger & co")):
        call = placed(stack, number)
        # Waiting for the end of the greeting, so the message is recorded whole.
        assert call["machine_detection"] == "DetectMessageEnd" and call["async_amd"]
        assert call["said"] == [f"Hi {name}, this is Acme about $5.00. Call us back."]
        assert call["twiml_updates"][0].endswith("<Hangup/></Response>")
        assert call_row(stack, number)[2:] == (
            "voicemail_message_left",
            "machine_end_beep",
            "message_left",
        )


def test_connect_agent_leaves_the_agent_with_the_machine_and_records_a_voicemail(
    stack: Stack, workspace: httpx.Client
):
    agent_id = create_agent(workspace)  # the default: connect_agent
    number = f"{MACHINE}4"
    stack.carrier.configure(
        dataclasses.replace(
            stack.carrier.config,
            rules=[
                Rule(pattern=number, outcome="voicemail", talk_seconds=1.5, amd_seconds=0.2),
                *stack.carrier.config.rules,
            ],
        )
    )
    batch = run_batch(stack, workspace, agent_id, [person(number, "Barbara")])
    assert batch["voicemail_behavior"] == "connect_agent"
    assert [(r["status"], r["outcome"]) for r in batch["recipients"]] == [
        ("voicemail", "voicemail")
    ]
    call = placed(stack, number)
    assert call["machine_detection"] == "Enable" and call["twiml_updates"] == []
    assert call_row(stack, number)[3:] == ("machine_start", None)


def test_a_forged_detection_callback_is_refused_and_changes_nothing(
    stack: Stack, workspace: httpx.Client
):
    number = f"{HUMAN}5"  # a person of its own: completed, answered by a human
    run_batch(stack, workspace, agent_with(workspace), [person(number, "Ada")])
    call_id, *before = call_row(stack, number)
    url = f"{stack.api_url}/v1/telephony/twilio/amd/{call_id}"
    form = {
        "AccountSid": SANDBOX_ACCOUNT_SID,
        "CallSid": placed(stack, number)["sid"],
        "AnsweredBy": "machine_end_beep",
        "MachineDetectionDuration": "2100",
    }
    forged = request_signature("not-the-auth-token", url, form)
    for signature in (forged, ""):
        response = httpx.post(url, data=form, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 403
        assert response.json()["detail"][0]["loc"] == ["header", "X-Twilio-Signature"]
    assert stack.sql("SELECT count(*) FROM status_inbox WHERE call_id = %s", call_id) == [(0,)]
    assert list(call_row(stack, number)[1:]) == before
    # Signed with the account's token, the same callback is taken (and changes nothing on a
    # call that has ended).
    genuine = request_signature(SANDBOX_AUTH_TOKEN, url, form)
    response = httpx.post(url, data=form, headers={"X-Twilio-Signature": genuine})
    assert response.status_code == 204
    wait_for(
        lambda: (
            stack.sql("SELECT count(*) FROM status_inbox WHERE call_id = %s", call_id) == [(0,)]
        ),
        10,
        what="the verdict to be applied",
    )
    assert list(call_row(stack, number)[1:]) == before


def test_agents_and_call_bulk_carry_the_voicemail_behavior(workspace: httpx.Client):
    created = workspace.post(
        "/v1/voiceai/agents",
        json={"name": "Reminders", "voicemail_behavior": "leave_message"},
    )
    assert created.status_code == 422
    assert created.json()["detail"][0]["loc"] == ["body", "voicemail_message"]
    created = workspace.post(
        "/v1/voiceai/agents",
        json={
            "name": "Reminders",
            "voicemail_behavior": "leave_message",
            "voicemail_message": "Hi {{first_name}}",
        },
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert (agent["voicemail_behavior"], agent["voicemail_message"]) == (
        "leave_message",
        "Hi {{first_name}}",
    )
    fetched = workspace.get(f"/v1/voiceai/agents/{agent['agent_id']}").json()
    assert fetched["voicemail_behavior"] == "leave_message"
    template = workspace.get(f"/ai/settings-templates/{agent['ai_settings_template_id']}")
    assert template.json()["voicemail_message"] == "Hi {{first_name}}"
    # Emptying the message of an agent that leaves one is refused; so is an unknown behaviour.
    cleared = workspace.patch(
        f"/v1/voiceai/agents/{agent['agent_id']}", json={"voicemail_message": " "}
    )
    assert cleared.status_code == 422
    unknown = workspace.patch(
        f"/v1/voiceai/agents/{agent['agent_id']}", json={"voicemail_behavior": "sing"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "voicemail_behavior"]
    # A recipient must supply the tags of the message it may be left.
    missing = submit(
        workspace,
        agent["agent_id"],
        None,
        [{"phone_number": f"{HUMAN}9"}],
    )
    assert missing.status_code == 422
    assert "first_name" in missing.json()["detail"][0]["msg"]
    # call-bulk takes the same override, under its own spelling.
    bulk = workspace.post(
        "/ai/phone-calls/action/call-bulk",
        json={
            "aiSettingsTemplateId": agent["ai_settings_template_id"],
            "voicemailBehavior": "hang_up",
            "contacts": [{"numberToCall": f"{HUMAN}8", "promptTags": {"first_name": "Kay"}}],
        },
    )
    assert bulk.status_code == 201, bulk.text
    batch = workspace.get(f"/v1/voiceai/batch-calling/{bulk.json()['batch_id']}").json()
    assert batch["voicemail_behavior"] == "hang_up"
