"""Two workspaces with Twilio accounts of their own: each batch dials through its own account
(the carrier records the account of every call, and signs its callbacks with that account's
token), and each account is paced on a budget of its own."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import httpx
from cryptography.fernet import Fernet

from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.conftest import new_api_key
from tests.factories import create_agent, create_connection, recipients, register_number, submit
from tests.support import RECOUNT, Stack, wait_for
from tests.worker.test_dispatch import batch_state, wait_final

ACCOUNTS = {
    "AC" + "1" * 32: "token-of-workspace-one",
    "AC" + "2" * 32: "token-of-workspace-two",
}
SANDBOX: dict[str, Any] = {"accounts": {SANDBOX_ACCOUNT_SID: SANDBOX_AUTH_TOKEN, **ACCOUNTS}}


def workspace_on_connection(
    stack: Stack, connection: dict[str, str], caller: str
) -> tuple[httpx.Client, str, str, str]:
    """A workspace with an agent, the provider ``connection`` and a caller number on it:
    (client, agent id, number id, connection id)."""
    client = stack.client(new_api_key(stack))
    connection_id = create_connection(client, connection)
    number_id = register_number(
        client, caller, connection["provider"], credentials_ref=connection_id
    )
    return client, create_agent(client), number_id, connection_id


def workspace_on_account(
    stack: Stack, account_sid: str, caller: str
) -> tuple[httpx.Client, str, str, str]:
    """``workspace_on_connection`` with a Twilio connection to ``account_sid``."""
    name = f"own account {uuid.uuid4().hex[:6]}"
    credentials = {"account_sid": account_sid, "auth_token": ACCOUNTS[account_sid]}
    return workspace_on_connection(
        stack, {"provider": "twilio", "name": name, **credentials}, caller
    )


def test_each_workspace_dials_through_its_own_account(make_stack):
    stack = make_stack(sandbox=SANDBOX)
    first_sid, second_sid = ACCOUNTS
    one = workspace_on_account(stack, first_sid, "+12025550301")
    two = workspace_on_account(stack, second_sid, "+12025550302")
    batches = []
    for (client, agent_id, number_id, _), prefix in ((one, "+1212555"), (two, "+1646555")):
        response = submit(client, agent_id, number_id, recipients(25, prefix))
        assert response.status_code == 200, response.text
        batches.append((client, response.json()["id"]))

    # Completed: every call's callbacks, signed by the carrier with the token of the call's
    # account, were accepted.
    for client, batch_id in batches:
        batch = wait_final(client, batch_id, timeout=90)
        assert batch["status"] == "completed"
        assert batch["total_calls_finished"] == 25
        [recount] = stack.sql(RECOUNT, batch_id)
        assert recount[:3] == (25, 25, 25)

    placed = stack.carrier.calls()
    by_caller = collections.defaultdict(set)
    for call in placed:
        by_caller[call["from"]].add(call["account_sid"])
    print(f"accounts per caller number: {dict(by_caller)}")
    assert len(placed) == 50
    assert by_caller == {"+12025550301": {first_sid}, "+12025550302": {second_sid}}
    assert {c["to"][:8] for c in placed if c["account_sid"] == first_sid} == {"+1212555"}
    assert stack.carrier.stats().get("callbacks_lost", 0) == 0


RATE, BURST, CALLS = 2, 1, 12


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + 1) for i, t in enumerate(times))


def assert_paced_apart(times: dict[str, list[float]], what: str) -> None:
    """Two budgets' dial times (each sorted, CALLS of them): each keeps to its own rate, and
    neither waits for the other: while both dial, their calls together come at about twice
    one budget's rate (on one shared budget they could not pass RATE plus a burst)."""
    overlap_from = max(budget_times[0] for budget_times in times.values())
    overlap_to = min(budget_times[-1] for budget_times in times.values())
    every = sorted(t for budget_times in times.values() for t in budget_times)
    together = [t for t in every if overlap_from <= t <= overlap_to]
    combined = (len(together) - 1) / (overlap_to - overlap_from)
    busiest = {name: _busiest_second(budget_times) for name, budget_times in times.items()}
    print(
        f"pacing per {what} at {RATE}/s (burst {BURST}): {CALLS} calls each, busiest second "
        f"per {what} {busiest}; both dialing for {overlap_to - overlap_from:.1f} s, "
        f"{combined:.2f} calls/s together"
    )
    assert [len(budget_times) for budget_times in times.values()] == [CALLS, CALLS]
    assert all(count <= RATE + BURST for count in busiest.values())
    assert overlap_to - overlap_from >= 2
    assert combined >= 1.5 * RATE


def test_two_accounts_are_paced_on_budgets_of_their_own(make_stack):
    stack = make_stack(
        sandbox=SANDBOX,
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": str(RATE),
            "SWITCHBOARD_PACING_BURST": str(BURST),
        },
    )
    first_sid, second_sid = ACCOUNTS
    one = workspace_on_account(stack, first_sid, "+12025550311")
    two = workspace_on_account(stack, second_sid, "+12025550312")
    batches = []
    for (client, agent_id, number_id, _), prefix in ((one, "+1212555"), (two, "+1646555")):
        response = submit(client, agent_id, number_id, recipients(CALLS, prefix, 100))
        assert response.status_code == 200, response.text
        batches.append((client, response.json()["id"]))
    for client, batch_id in batches:
        assert wait_final(client, batch_id, timeout=90)["status"] == "completed"

    placed = stack.carrier.calls()
    assert_paced_apart(
        {
            sid[-4:]: sorted(c["created_at"] for c in placed if c["account_sid"] == sid)
            for sid in ACCOUNTS
        },
        "account",
    )


def test_a_connection_whose_secrets_cannot_be_read_holds_its_calls_until_they_can(make_stack):
    stack = make_stack(
        sandbox=SANDBOX,
        settings_env={
            "SWITCHBOARD_PROVIDER_UNREACHABLE_RETRY_BASE_S": "1",
            "SWITCHBOARD_PROVIDER_UNREACHABLE_RETRY_MAX_S": "2",
            "SWITCHBOARD_CONNECTION_CACHE_TTL_S": "0.5",
        },
    )
    client, agent_id, number_id, connection_id = workspace_on_account(
        stack, next(iter(ACCOUNTS)), "+12025550321"
    )
    # Encrypted under a key the stack does not have (as after dropping a key too early).
    [(readable,)] = stack.sql(
        "SELECT secret FROM provider_connections WHERE id = %s", connection_id
    )
    unreadable = Fernet(Fernet.generate_key()).encrypt(b'{"auth_token": "x"}').decode()
    stack.sql(
        "UPDATE provider_connections SET secret = %s WHERE id = %s", unreadable, connection_id
    )
    response = submit(client, agent_id, number_id, recipients(3, "+1212555", 200))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]

    # Treated as a provider that cannot be reached: the calls wait, nothing is dialed.
    wait_for(
        lambda: stack.sql("SELECT first_unreachable_at FROM batches WHERE id = %s", batch_id)[0][0],
        30,
        what="a dial of the batch to find its account unusable",
    )
    assert stack.carrier.calls() == []
    assert batch_state(client, batch_id)["status"] == "in_progress"

    stack.sql("UPDATE provider_connections SET secret = %s WHERE id = %s", readable, connection_id)
    assert wait_final(client, batch_id, timeout=60)["status"] == "completed"
    assert {c["account_sid"] for c in stack.carrier.calls()} == {next(iter(ACCOUNTS))}


def test_a_number_whose_connection_is_gone_fails_its_batch_with_a_clear_reason(make_stack):
    stack = make_stack(sandbox=SANDBOX)
    client, agent_id, number_id, _ = workspace_on_account(
        stack, next(iter(ACCOUNTS)), "+12025550331"
    )
    # What the API never lets happen (a connection a number names cannot be deleted).
    stack.sql("UPDATE phone_numbers SET credentials_ref = 'conn_gone' WHERE id = %s", number_id)
    response = submit(client, agent_id, number_id, recipients(2, "+1212555", 300))
    assert response.status_code == 200, response.text
    batch = wait_final(client, response.json()["id"], timeout=60)
    assert batch["status"] == "failed"
    outcomes = {r["outcome"] for r in batch["recipients"]}
    assert "provider_auth_failed" in outcomes, outcomes
    assert stack.carrier.calls() == []
