"""Flower as a real process on the stack's broker: it sees a worker that sends task events,
its tasks, and refuses requests without the basic-auth credentials."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import free_port, wait_for

USER, PASSWORD = "flower-user", "flower-pass"


def test_flower_shows_the_live_worker_and_its_dial_tasks_behind_basic_auth(make_stack):
    stack = make_stack(workers=0)
    stack.start_worker(name="evented", events=True)
    port = free_port()
    stack.start_flower(port, USER, PASSWORD)
    flower = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(USER, PASSWORD), timeout=10)

    def answers() -> bool:
        try:
            return flower.get("/healthcheck").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 30, what="Flower to answer /healthcheck")

    client = stack.client(new_api_key(stack))
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(3, "+1646555", 1500))
    assert response.status_code == 200, response.text

    def live_worker() -> list[str]:
        # status=true reads the workers' heartbeat events (they send them with -E).
        workers: dict[str, Any] = flower.get("/api/workers", params={"status": "true"}).json()
        return [name for name, online in workers.items() if name.startswith("evented-") and online]

    wait_for(live_worker, 30, what="Flower to list the worker as online")

    def dial_tasks() -> list[dict[str, Any]]:
        tasks: dict[str, Any] = flower.get("/api/tasks", params={"taskname": "calls.dial"}).json()
        return [task for task in tasks.values() if task.get("name") == "calls.dial"]

    seen = wait_for(dial_tasks, 30, what="Flower to list a calls.dial task")
    assert all(task["worker"].startswith("evented-") for task in seen)

    # The same endpoints without credentials, or with wrong ones: 401, nothing listed.
    for auth in (None, (USER, "wrong")):
        for path in ("/api/workers", "/api/tasks", "/"):
            refused = httpx.get(f"http://127.0.0.1:{port}{path}", auth=auth, timeout=10)
            assert refused.status_code == 401, (path, auth, refused.status_code)
    flower.close()
