"""Batches through a SIP trunk number, end to end with real worker processes: the dial goes to
Twilio's SIP interface (the sandbox carrier) as sip:<E.164>@<trunk> with the trunk's
credentials and headers, the trunk's SIP responses become our outcomes, a trunk refusing our
credentials fails the batch, and the trunk's credentials appear in no response, log line or
webhook."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, new_api_key, wait_for
from tests.worker.test_batch_control import LONG_CALLS, cancel_mid_batch
from tests.worker.test_connections_dispatch import BURST, CALLS, RATE, assert_paced_apart
from tests.worker.test_dispatch import (
    MIXED_OUTCOMES,
    assert_counters_match_rows,
    batch_state,
    thousand_mixed_outcomes,
    wait_final,
)
from tests.worker.test_webhooks import Receiver, _register

ADDRESS = "trunk.sandbox.test:5070"
USERNAME = "trunk-user-7Qz4"
PASSWORD = "pw-Secret-9xKw2"
HEADERS = {"X-Campaign": "spring sale", "X-Tenant-Id": "acme"}
TRUNK = {
    "address": ADDRESS,
    "transport": "tcp",
    "media_encryption": "allowed",
    "credentials": {"username": USERNAME, "password": PASSWORD},
    "headers": HEADERS,
}
SANDBOX_TRUNKS = {ADDRESS: {"username": USERNAME, "password": PASSWORD, "transport": "tcp"}}
# The trunk's final answer by the number's last digit; the other numbers play the usual mix.
SIP_RULES = [
    {"pattern": f"re:\\+1212555\\d{{3}}{digit}", "sip_response": code}
    for digit, code in (("1", 486), ("2", 600), ("3", 480), ("4", 408), ("5", 404), ("6", 484))
]
SIP_MIXED = {
    **MIXED_OUTCOMES,
    "sip_trunks": SANDBOX_TRUNKS,
    "rules": [*SIP_RULES, *MIXED_OUTCOMES["rules"]],
}
# (status, outcome, error_code) each SIP response ends a recipient with.
BY_SIP_RESPONSE = {
    486: ("failed", "busy", "sip_486"),
    600: ("failed", "busy", "sip_600"),
    480: ("failed", "no_answer", "sip_480"),
    408: ("failed", "no_answer", "sip_408"),
    404: ("failed", "call_failed", "sip_404"),
    484: ("failed", "call_failed", "sip_484"),
}


def register_trunk_number(
    client: httpx.Client, trunk: dict[str, Any], number: str = "+12025550188"
) -> str:
    return register_number(client, number, "sip_trunk", outbound_trunk_config=trunk)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def assert_no_credentials_anywhere(stack: Stack, texts: list[str]) -> None:
    """Neither the trunk's username nor its password is in ``texts`` (responses, webhook
    bodies) or in any line any process of the stack logged."""
    logs = {path.name: path.read_text(errors="replace") for path in stack.log_dir.glob("*.log")}
    assert logs, "the stack's processes write their logs to its directory"
    for secret in (USERNAME, PASSWORD):
        assert not [name for name, text in logs.items() if secret in text], secret
        assert not [text for text in texts if secret in text], secret


def test_a_thousand_recipients_through_a_sip_trunk(make_stack, receiver: Receiver):
    stack = make_stack(webhooks_worker=True, sandbox=SIP_MIXED)
    client = stack.client(new_api_key(stack))
    _register(client, receiver.url)
    agent_id = create_agent(client)
    number_id = register_trunk_number(client, TRUNK)
    # Every recipient final once as its call was played, counters equal to their recount, no
    # number dialed twice (the helper of the Twilio and Vobiz tests).
    batch = thousand_mixed_outcomes(stack, (client, agent_id, number_id), timeout=180)
    assert batch["phone_provider"] == "sip_trunk"
    # Every number was dialed over the trunk, with its URI, credentials and headers.
    placed = stack.carrier.calls()
    call_ids = {r["phone_number"]: r["id"] for r in batch["recipients"]}
    for call in placed:
        number = call["number"]
        assert call["to"] == (
            f"sip:{number}@{ADDRESS};transport=tcp?X-Campaign=spring%20sale&X-Tenant-Id=acme"
        )
        assert call["sip"]["auth"] == "ok" and call["sip"]["username"] == USERNAME
        assert (call["sip"]["transport"], call["sip"]["headers"]) == ("tcp", HEADERS)
        assert (
            call["status_callback"]
            .split("#")[0]
            .endswith(f"/v1/telephony/sip_trunk/status/{call_ids[number]}")
        )
        assert call["url"].endswith(f"/v1/telephony/sip_trunk/twiml/{call_ids[number]}")
    # Every recipient the trunk refused ended with the outcome and error code its SIP response
    # maps to (the others ended as Twilio's word says, checked above).
    rows = {
        number: (status, outcome, error_code)
        for number, status, outcome, error_code in stack.sql(
            "SELECT phone_number, status, outcome, error_code FROM calls WHERE batch_id = %s",
            batch["id"],
        )
    }
    for call in placed:
        if call["sip_response"] in BY_SIP_RESPONSE:
            assert rows[call["number"]] == BY_SIP_RESPONSE[call["sip_response"]]
    assert {code for _, _, code in rows.values()} >= {f"sip_{c}" for c in BY_SIP_RESPONSE}

    # The credentials are in no response, webhook or log line.
    wait_for(  # a call.ended per recipient and the batch.completed
        lambda: len(receiver.delivered()) >= 1001, 60, what="every webhook delivery"
    )
    deliveries = [r["body"].decode() for r in receiver.requests]
    texts = [
        *deliveries,
        client.get(f"/v1/voiceai/batch-calling/{batch['id']}").text,
        client.get(f"/v1/voiceai/batch-calling/{batch['id']}/export.csv").text,
        client.get("/v1/voiceai/phone-numbers").text,
        client.get("/v1/voiceai/webhooks/deliveries?limit=100").text,
        client.get("/dashboard/data").text,
        json.dumps(stack.carrier.calls()),  # what the carrier keeps: the username, never more
    ]
    assert_no_credentials_anywhere(stack, texts[:-1])
    assert PASSWORD not in texts[-1]


@pytest.mark.parametrize(
    ("credentials", "code"),
    [({"username": USERNAME, "password": "not-the-password"}, 403), (None, 407)],
)
def test_a_trunk_refusing_our_credentials_fails_the_batch(
    make_stack, receiver: Receiver, credentials: dict[str, str] | None, code: int
):
    stack = make_stack(
        webhooks_worker=True,
        sandbox={"sip_trunks": SANDBOX_TRUNKS, "default_ring_seconds": 0.02},
        workers=0,
    )
    stack.start_worker(name="worker0", loglevel="DEBUG")  # every line it can log, searched below
    client = stack.client(new_api_key(stack))
    _register(client, receiver.url)
    trunk = {k: v for k, v in TRUNK.items() if k != "credentials"}
    if credentials is not None:
        trunk["credentials"] = credentials
    number_id = register_trunk_number(client, trunk)
    response = submit(
        client, create_agent(client), number_id, recipients(20), target_concurrency_limit=1
    )
    assert response.status_code == 200, response.text
    # The batch fails with the first call's answer; a call claimed just then ends a moment
    # later, at its dial's fence.
    batch = wait_for(
        lambda: (lambda b: b if b["total_calls_finished"] == 20 else None)(
            batch_state(client, response.json()["id"])
        ),
        60,
        what="every call of the failed batch to end",
    )

    assert batch["status"] == "failed"
    assert_counters_match_rows(stack, batch)
    [placed] = stack.carrier.calls()  # one call at a time: the first one's answer ends it all
    assert placed["sip_response"] == code
    assert placed["sip"]["auth"] == ("wrong" if credentials else "missing")
    outcomes = collections.Counter(r["outcome"] for r in batch["recipients"])
    assert outcomes == {"provider_auth_failed": 1, "batch_failed": 19}
    ((reason,),) = stack.sql("SELECT failure_reason FROM batches WHERE id = %s", batch["id"])
    assert "refused our credentials" in reason and f"SIP {code}" in reason
    ((error_code, error_message),) = stack.sql(
        "SELECT error_code, error_message FROM calls WHERE batch_id = %s "
        "AND outcome = 'provider_auth_failed'",
        batch["id"],
    )
    assert error_code == f"sip_{code}" and "refused our credentials" in error_message
    texts = [r["body"].decode() for r in receiver.requests]
    texts.append(client.get(f"/v1/voiceai/batch-calling/{batch['id']}").text)
    assert_no_credentials_anywhere(stack, texts)


def test_a_trunk_dial_whose_answer_was_lost_is_found_not_redialed(make_stack):
    # The carrier creates the call but answers after the client's 2 s timeout, and no callback
    # about it ever comes: only the reconciliation's lookup can find it.
    stack = make_stack(
        sandbox={
            "sip_trunks": SANDBOX_TRUNKS,
            "rules": [{"pattern": "+12125550700", "timeout_seconds": 3, "drop_callbacks": True}],
        }
    )
    client = stack.client(new_api_key(stack))
    number_id = register_trunk_number(client, TRUNK)
    response = submit(client, create_agent(client), number_id, recipients(2, start=700))
    assert response.status_code == 200, response.text
    batch = wait_final(client, response.json()["id"], timeout=90)

    assert batch["status"] == "completed"
    assert [r["status"] for r in batch["recipients"]] == ["completed", "completed"]
    assert collections.Counter(call["number"] for call in stack.carrier.calls()) == {
        "+12125550700": 1,
        "+12125550701": 1,
    }
    assert_counters_match_rows(stack, batch)


def test_a_cancelled_trunk_batch_places_nothing_after_the_response(make_stack):
    # Calls ring and talk for seconds: the cancel finds trunk calls live and ends them through
    # Twilio (a CANCEL or BYE on the trunk), as for any Twilio call.
    stack = make_stack(sandbox={**LONG_CALLS, "sip_trunks": SANDBOX_TRUNKS}, workers=2)
    client = stack.client(new_api_key(stack))
    number_id = register_trunk_number(client, TRUNK)
    cancel_mid_batch(stack, (client, create_agent(client), number_id), recipients(200))
    placed = stack.carrier.calls()
    assert all(call["sip"]["auth"] == "ok" for call in placed)
    assert any(call["status"] == "canceled" for call in placed)  # ended while ringing, by us


def test_two_trunks_are_paced_on_budgets_of_their_own(make_stack):
    # Both trunks' calls go through the one Twilio account, yet each trunk is its own budget.
    trunks = {"a.trunk.test": "+12025550321", "b.trunk.test": "+12025550322"}
    stack = make_stack(
        sandbox={"sip_trunks": {address: {} for address in trunks}},
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": str(RATE),
            "SWITCHBOARD_PACING_BURST": str(BURST),
        },
    )
    client = stack.client(new_api_key(stack))
    agent_id = create_agent(client)
    batches = []
    for (address, caller), prefix in zip(trunks.items(), ("+1212555", "+1646555"), strict=True):
        number_id = register_trunk_number(client, {"address": address}, caller)
        response = submit(client, agent_id, number_id, recipients(CALLS, prefix, 300))
        assert response.status_code == 200, response.text
        batches.append(response.json()["id"])
    for batch_id in batches:
        assert wait_final(client, batch_id, timeout=90)["status"] == "completed"

    placed = stack.carrier.calls()
    assert_paced_apart(
        {
            address: sorted(c["created_at"] for c in placed if c["sip"]["address"] == address)
            for address in trunks
        },
        "trunk",
    )
