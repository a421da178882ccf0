"""Live-call caps per provider account (SWITCHBOARD_MAX_LIVE_CALLS_PER_ACCOUNT), with real
workers: each connection has a cap of its own, the environment's account is one account for
every workspace on it, and the account slots are rebuilt from PostgreSQL when Redis loses
them. How many calls were live at once is read from the carrier's record of each call (from
its creation to its end), which a slot spans."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from shared.lifecycle.states import SQL_LIVE
from shared.settings import SANDBOX_ACCOUNT_SID
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import wait_for
from tests.worker.test_connections_dispatch import ACCOUNTS, SANDBOX, workspace_on_account
from tests.worker.test_dispatch import wait_final

CAP = 2
# Pacing and the workspace cap far from binding: the account cap alone limits the calls.
CAPPED = {
    "SWITCHBOARD_MAX_LIVE_CALLS_PER_ACCOUNT": str(CAP),
    "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": "50",
}


def _sandbox(talk_seconds: float) -> dict[str, Any]:
    rule = {"pattern": "*", "ring_seconds": 0.1, "talk_seconds": talk_seconds}
    return {**SANDBOX, "rules": [rule]}


def most_live_at_once(calls: list[dict[str, Any]]) -> int:
    """The most of these carrier calls up at the same moment (an end before a start at the
    same instant)."""
    events = sorted(
        [(c["created_at"], 1) for c in calls] + [(c["end_time"], -1) for c in calls],
        key=lambda event: (event[0], event[1]),
    )
    live = most = 0
    for _, step in events:
        live += step
        most = max(most, live)
    return most


def _submit(client: httpx.Client, agent_id: str, number_id: str, prefix: str, count: int) -> str:
    response = submit(client, agent_id, number_id, recipients(count, prefix))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_each_connection_has_a_live_call_cap_of_its_own(make_stack):
    stack = make_stack(sandbox=_sandbox(talk_seconds=1.5), settings_env=CAPPED)
    first_sid, second_sid = ACCOUNTS
    one = workspace_on_account(stack, first_sid, "+12025550401")
    two = workspace_on_account(stack, second_sid, "+12025550402")
    batches = [
        (client, _submit(client, agent_id, number_id, prefix, 8))
        for (client, agent_id, number_id, _), prefix in ((one, "+1212555"), (two, "+1646555"))
    ]
    for client, batch_id in batches:
        batch = wait_final(client, batch_id, timeout=120)
        assert batch["status"] == "completed" and batch["total_calls_finished"] == 8

    placed = stack.carrier.calls()
    per_account = {
        sid: most_live_at_once([c for c in placed if c["account_sid"] == sid]) for sid in ACCOUNTS
    }
    together = most_live_at_once(placed)
    print(f"cap {CAP} per account: most live at once per account {per_account}, {together} all")
    assert len(placed) == 16
    assert all(1 <= most <= CAP for most in per_account.values())
    # On one shared budget the two could never have had more than CAP live together.
    assert together > CAP


def test_workspaces_on_the_environment_account_share_its_cap(make_stack):
    stack = make_stack(sandbox=_sandbox(talk_seconds=1.0), settings_env=CAPPED)
    batches = []
    for caller, prefix in (("+12025550411", "+1212555"), ("+12025550412", "+1646555")):
        client = stack.client(new_api_key(stack))
        number_id = register_number(client, caller)  # credentials_ref "default"
        batches.append((client, _submit(client, create_agent(client), number_id, prefix, 5)))
    for client, batch_id in batches:
        assert wait_final(client, batch_id, timeout=120)["status"] == "completed"

    placed = stack.carrier.calls()
    together = most_live_at_once(placed)
    print(f"cap {CAP} per account: two workspaces on the environment's, {together} live at most")
    assert len(placed) == 10 and {c["account_sid"] for c in placed} == {SANDBOX_ACCOUNT_SID}
    assert together == CAP


def test_account_slots_are_rebuilt_after_redis_loses_them(make_stack):
    stack = make_stack(sandbox=_sandbox(talk_seconds=5.0), settings_env=CAPPED)
    client, agent_id, number_id, connection_id = workspace_on_account(
        stack, next(iter(ACCOUNTS)), "+12025550421"
    )
    batch_id = _submit(client, agent_id, number_id, "+1212555", 4)

    def live_calls() -> set[str]:
        rows = stack.sql(
            f"SELECT id FROM calls WHERE batch_id = %s AND status IN {SQL_LIVE}", batch_id
        )
        return {row[0] for row in rows}

    wait_for(lambda: len(live_calls()) == CAP, 30, what=f"{CAP} calls to be live")
    broker = redis.Redis.from_url(stack.redis_url)
    account_slot = f"{stack.redis_prefix}slots:account:{connection_id}"
    wait_for(
        lambda: {m.decode() for m in broker.zrange(account_slot, 0, -1)} == live_calls(),
        10,
        what="the live calls to hold the account's slots",
    )
    # Redis lost the slots (and the marker that says its copy of them is whole).
    for key in broker.scan_iter(match=f"{stack.redis_prefix}slots*"):
        broker.delete(key)

    def rebuilt() -> set[str] | None:
        if not broker.exists(f"{stack.redis_prefix}slots-whole"):
            return None
        held = {m.decode() for m in broker.zrange(account_slot, 0, -1)}
        return held if held == live_calls() else None

    restored = wait_for(rebuilt, 30, what="the tick to rebuild the slots from PostgreSQL")
    print(f"account slot rebuilt with the {len(restored)} live calls of the connection")
    assert len(restored) == CAP
    assert wait_final(client, batch_id, timeout=120)["status"] == "completed"
    placed = stack.carrier.calls()
    assert len(placed) == 4 and most_live_at_once(placed) == CAP
    assert broker.zcard(account_slot) == 0
    broker.close()
