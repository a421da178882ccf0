"""End to end through a Vobiz number, with real worker processes and the sandbox carrier's
Vobiz API: exact counters, callbacks that are forged, replayed or doubled, a killed worker,
and a cancel."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox import vobiz_api
from shared.settings import SANDBOX_VOBIZ_AUTH_ID, SANDBOX_VOBIZ_AUTH_TOKEN
from tests.factories import recipients, submit
from tests.support import Stack, wait_for
from tests.worker.test_batch_control import LONG_CALLS, cancel_mid_batch
from tests.worker.test_connections_dispatch import workspace_on_connection
from tests.worker.test_dispatch import (
    MIXED_OUTCOMES,
    SLOW_CALLS,
    assert_counters_match_rows,
    batch_state,
    dial_counts,
    redeliver_dials,
    setup_workspace,
    sigkill_mid_batch,
    thousand_mixed_outcomes,
    wait_final,
    wait_taken,
)
from tests.worker.test_voicemail import (
    HUMAN,
    MACHINE,
    agent_with,
    call_row,
    person,
    placed,
    run_batch,
)


def setup_vobiz_workspace(stack: Stack) -> tuple[httpx.Client, str, str]:
    """A workspace on the stack with an agent and a Vobiz caller number (the environment's
    Vobiz account: the sandbox carrier's)."""
    return setup_workspace(stack, "vobiz")


def post_signed(
    url: str, params: dict[str, str], token: str = SANDBOX_VOBIZ_AUTH_TOKEN
) -> httpx.Response:
    """A callback as Vobiz posts it, signed (V3) with ``token``."""
    return httpx.post(url, data=params, headers=vobiz_api.signature_headers(token, url, params))


def test_thousand_recipients_through_vobiz_counters_equal_recount(make_stack):
    stack = make_stack(sandbox=MIXED_OUTCOMES)
    batch = thousand_mixed_outcomes(stack, setup_vobiz_workspace(stack), timeout=180)
    assert batch["phone_provider"] == "vobiz"
    # Each call went through Vobiz's API with our answer, ring and hang-up URLs, machine
    # detection and the batch's ring timeout; answered calls fetched their VobizXML.
    call_ids = {r["phone_number"]: r["id"] for r in batch["recipients"]}
    # An answer document is fetched beside the call's callbacks, not before them: the batch
    # may end while the last fetches are still on their way.
    assert stack.carrier.wait_idle(30)
    for call in stack.carrier.calls():
        call_id = call_ids[call["to"]]
        assert call["api"] == "vobiz"
        assert call["url"].endswith(f"/v1/telephony/vobiz/answer/{call_id}")
        assert call["status_callback"].endswith(f"/v1/telephony/vobiz/status/{call_id}")
        assert call["ring_url"] == call["status_callback"]
        assert call["amd_callback"].endswith(f"/v1/telephony/vobiz/amd/{call_id}")
        assert call["machine_detection"] == "Enable" and call["timeout"] == 25
        if call["outcome"] in ("completed", "voicemail"):
            assert "<Stream " in (call["twiml"] or ""), call["twiml"]
        assert not call["callbacks_lost"]
    assert all(r["provider_call_sid"] for r in batch["recipients"])
    # The carrier doubled some callbacks (duplicate delivery): each changed nothing twice.
    assert stack.carrier.stats()["callbacks_sent"] >= 2000  # ring and hang-up per call


def test_forged_replayed_and_duplicate_vobiz_callbacks_change_nothing(make_stack):
    stack = make_stack()
    client, agent_id, number_id = setup_vobiz_workspace(stack)
    people = recipients(2, "+1646555", 4800)
    batch_id = submit(client, agent_id, number_id, people).json()["id"]
    before = wait_final(client, batch_id, timeout=60)
    assert [r["outcome"] for r in before["recipients"]] == ["answered", "answered"]
    call_id, sid = stack.sql(
        "SELECT id, provider_call_sid FROM calls WHERE batch_id = %s ORDER BY position LIMIT 1",
        batch_id,
    )[0]
    url = f"{stack.api_url}/v1/telephony/vobiz/status/{call_id}"
    busy = {"CallUUID": sid, "CallStatus": "busy", "Event": "Hangup", "AnswerTime": ""}
    inbox = "SELECT count(*) FROM status_inbox"
    stored = stack.sql(inbox)

    # Forged: signed with another token, unsigned, or a genuine signature over another form.
    for response in (
        post_signed(url, busy, token="not-our-token"),
        httpx.post(url, data=busy),
        httpx.post(
            url,
            data=busy,
            headers=vobiz_api.signature_headers(SANDBOX_VOBIZ_AUTH_TOKEN, url, {**busy, "x": "1"}),
        ),
        post_signed(f"{stack.api_url}/v1/telephony/vobiz/amd/{call_id}", {"CallUUID": sid}, "x"),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["detail"][0]["loc"] == ["header", "X-Vobiz-Signature-V3"]
    assert stack.sql(inbox) == stored  # nothing was stored

    # Replayed (the same signed request three times) and duplicated (each status again).
    final = {
        "CallUUID": sid,
        "CallStatus": "completed",
        "Event": "Hangup",
        "Duration": "1",
        "AnswerTime": "2026-12-04 10:00:00",
    }
    headers = vobiz_api.signature_headers(SANDBOX_VOBIZ_AUTH_TOKEN, url, final)
    for _ in range(3):
        assert httpx.post(url, data=final, headers=headers).status_code == 204
    for status in ("ringing", "in-progress", "busy", "no-answer", "cancel"):
        response = post_signed(url, {**final, "CallStatus": status})
        assert response.status_code == 204
    # The same dial messages delivered again to the real worker.
    wait_taken(stack, redeliver_dials(stack, [call_id]))
    wait_for(
        lambda: (
            stack.sql("SELECT count(*) FROM status_inbox WHERE call_id = %s", call_id) == [(0,)]
        ),
        30,
        what="the replayed callbacks to be applied",
    )
    after = batch_state(client, batch_id)
    for counter in ("total_calls_dispatched", "total_calls_finished", "retry_count"):
        assert after[counter] == before[counter]
    assert [(r["status"], r["outcome"]) for r in after["recipients"]] == [
        (r["status"], r["outcome"]) for r in before["recipients"]
    ]
    assert dial_counts(stack)["+16465554800"] == 1
    assert_counters_match_rows(stack, after)


def test_sigkill_mid_vobiz_batch_loses_nothing_and_doubles_nothing(make_stack):
    stack = make_stack(sandbox=SLOW_CALLS, workers=1, embed_beat=False)
    sigkill_mid_batch(stack, setup_vobiz_workspace(stack), recipients(300, "+1646555", 4900))


def test_cancel_of_a_vobiz_batch_places_nothing_after_the_response(make_stack):
    # Live calls are hung up through Vobiz's API (DELETE), ringing ones cancelled.
    stack = make_stack(sandbox=LONG_CALLS, workers=2)
    cancel_mid_batch(stack, setup_vobiz_workspace(stack), recipients(300, "+1646555", 5300))


def test_ambiguous_vobiz_dial_is_looked_up_not_redialed(make_stack):
    # Vobiz answers after the client's timeout, but it did place the call (busy, and none of
    # its callbacks comes): only looking it up among the account's calls finds it. Another
    # number's dial meets a 429, which Vobiz did not process: that one is sent again.
    stack = make_stack(
        sandbox={
            "seed": 2,  # the 429 rule refuses the first request and accepts the second
            "rules": [
                {
                    "pattern": "+16465555400",
                    "timeout_seconds": 3,
                    "outcome": "busy",
                    "drop_callbacks": True,
                },
                {"pattern": "+16465555401", "http_error": 429, "http_error_probability": 0.5},
            ],
        }
    )
    client, agent_id, number_id = setup_vobiz_workspace(stack)
    batch_id = submit(client, agent_id, number_id, recipients(3, "+1646555", 5400)).json()["id"]
    batch = wait_final(client, batch_id, timeout=90)
    assert batch["status"] == "completed"
    assert [(r["status"], r["outcome"]) for r in batch["recipients"]] == [
        ("failed", "busy"),
        ("completed", "answered"),
        ("completed", "answered"),
    ]
    (placed,) = [c for c in stack.carrier.calls() if c["to"] == "+16465555400"]
    assert batch["recipients"][0]["provider_call_sid"] == placed["sid"]
    counts = dial_counts(stack)
    assert counts["+16465555400"] == 1 and set(counts.values()) == {1}
    assert stack.carrier.stats().get("rejected_429", 0) >= 1
    assert_counters_match_rows(stack, batch)


def test_a_machine_on_a_vobiz_call_is_hung_up_on_or_left_the_message(make_stack):
    stack = make_stack(
        sandbox={
            "rules": [
                {"pattern": f"{HUMAN}*", "outcome": "completed", "talk_seconds": 1.0},
                # A machine that would listen for a minute.
                {"pattern": f"{MACHINE}*", "outcome": "voicemail", "talk_seconds": 60.0},
            ],
            "default_amd_seconds": 0.2,
        }
    )
    client, _, number_id = setup_vobiz_workspace(stack)
    agent_id = agent_with(client, voicemail_behavior="hang_up")
    human, machine = f"{HUMAN}7", f"{MACHINE}7"
    people = [person(human, "Grace"), person(machine, "Alan")]
    batch = run_batch(stack, client, agent_id, people, agent_phone_number_id=number_id)
    outcomes = {r["phone_number"]: (r["status"], r["outcome"]) for r in batch["recipients"]}
    assert outcomes == {human: ("completed", "answered"), machine: ("voicemail", "voicemail")}
    assert placed(stack, machine)["duration"] < 10  # hung up on when detected
    assert call_row(stack, human)[1:] == ("completed", "answered", "human", None)
    assert call_row(stack, machine)[1:] == ("voicemail", "voicemail", "machine", "hung_up")

    # Leaving a message: the call is transferred to our VobizXML, which speaks it and hangs up.
    first, second = f"{MACHINE}8", f"{MACHINE}9"
    batch = run_batch(
        stack,
        client,
        agent_id,
        [person(first, "Ada"), person(second, "Edsger & co")],
        agent_phone_number_id=number_id,
        voicemail_behavior="leave_message",
        voicemail_message="Hi {{first_name}}, this is Acme about <<amount>>. Call us back.",
    )
    assert {(r["status"], r["outcome"]) for r in batch["recipients"]} == {
        ("voicemail", "voicemail_message_left")
    }
    for number, name in ((first, "Ada"), (second, "Edsger & co")):
        call = placed(stack, number)
        assert call["said"] == [f"Hi {name}, this is Acme about $5.00. Call us back."]
        assert call["duration"] < 10
        assert call_row(stack, number)[2:] == ("voicemail_message_left", "machine", "message_left")


VOBIZ_ACCOUNTS = {"MA_WORKSPACE_ONE": "vobiz-token-one", "MA_WORKSPACE_TWO": "vobiz-token-two"}


def workspace_on_vobiz_account(stack: Stack, auth_id: str, caller: str) -> tuple[Any, ...]:
    """A workspace with an agent, a Vobiz connection to ``auth_id`` and a caller number on it:
    (client, agent id, number id)."""
    credentials = {"auth_id": auth_id, "auth_token": VOBIZ_ACCOUNTS[auth_id]}
    connection = {"provider": "vobiz", "name": f"vobiz {auth_id}", **credentials}
    return workspace_on_connection(stack, connection, caller)[:3]


def test_each_workspace_dials_through_its_own_vobiz_account(make_stack):
    accounts = {SANDBOX_VOBIZ_AUTH_ID: SANDBOX_VOBIZ_AUTH_TOKEN, **VOBIZ_ACCOUNTS}
    stack = make_stack(sandbox={"accounts": accounts})
    first, second = VOBIZ_ACCOUNTS
    one = workspace_on_vobiz_account(stack, first, "+12025550311")
    two = workspace_on_vobiz_account(stack, second, "+12025550312")
    batches = []
    for (client, agent_id, number_id), prefix in ((one, "+1212555"), (two, "+1646555")):
        response = submit(client, agent_id, number_id, recipients(10, prefix, 8000))
        assert response.status_code == 200, response.text
        batches.append((client, response.json()["id"]))
    # Completed: every call's callbacks, signed by the carrier with the token of the call's
    # account (named in the callback URLs), were accepted.
    for client, batch_id in batches:
        batch = wait_final(client, batch_id, timeout=90)
        assert batch["status"] == "completed" and batch["total_calls_finished"] == 10
        assert_counters_match_rows(stack, batch)
    placed = stack.carrier.calls()
    assert {(c["from"], c["account_sid"]) for c in placed} == {
        ("+12025550311", first),
        ("+12025550312", second),
    }
    for call in placed:
        assert call["status_callback"].endswith(f"?account={call['account_sid']}")
        assert not call["callbacks_lost"]

    # A callback for one account's call signed with the other's token is refused.
    (call_id,) = stack.sql("SELECT id FROM calls WHERE phone_number = '+12125558000'")[0]
    url = f"{stack.api_url}/v1/telephony/vobiz/status/{call_id}?account={first}"
    forged = post_signed(url, {"CallUUID": "x", "CallStatus": "busy"}, VOBIZ_ACCOUNTS[second])
    assert forged.status_code == 403
