"""One workspace's bad webhook receivers slow neither dialing nor another workspace's
deliveries (real stack: a main worker, a webhooks worker, beat)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from shared.settings import Settings
from tests.factories import recipients, submit
from tests.support import Stack, wait_for
from tests.worker.test_dispatch import setup_workspace
from tests.worker.test_webhooks import Receiver, _register

BATCH_SIZE = 100
# How long a delivery waits for a receiver's answer: the stack keeps the default.
RECEIVER_TIMEOUT_S = Settings.model_fields["webhook_timeout_s"].default
BAD_NAMES = 100
# B's calls: each one ends with a delivery to every one of B's endpoints.
B_CALLS = 30


class SilentReceiver:
    """A TCP server on loopback that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)  # held open, never read, never answered

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


def _run_batch(stack: Stack, client: Any, agent_id: str, number_id: str, start: int) -> float:
    """Seconds from submitting a batch of ``BATCH_SIZE`` calls to seeing it completed."""
    started = time.monotonic()
    response = submit(client, agent_id, number_id, recipients(BATCH_SIZE, "+1646557", start))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    wait_for(
        lambda: (
            stack.sql("SELECT status FROM batches WHERE id = %s", batch_id)[0][0] == "completed"
        ),
        120,
        interval=0.05,
        what=f"batch {batch_id} to complete",
    )
    return time.monotonic() - started


def _pending(stack: Stack, workspace_id: str) -> int:
    return int(
        stack.sql(
            "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = %s "
            "AND status = 'pending'",
            workspace_id,
        )[0][0]
    )


def _latency(stack: Stack, workspace_id: str, since: float) -> tuple[int, float, float]:
    """How many of the workspace's deliveries were written since ``since``, and the median and
    the longest time from writing one to its delivery."""
    [(count, median, slowest)] = stack.sql(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "delivered_at - created_at)), max(extract(epoch FROM delivered_at - created_at)) "
        "FROM webhook_deliveries WHERE workspace_id = %s AND created_at >= to_timestamp(%s)",
        workspace_id,
        since,
    )
    return int(count), float(median), float(slowest)


def _workspace(stack: Stack, client: Any) -> str:
    endpoint = client.get("/v1/voiceai/webhooks").json()["webhooks"][0]["id"]
    return str(
        stack.sql("SELECT workspace_id FROM webhook_endpoints WHERE id = %s", endpoint)[0][0]
    )


def test_bad_receivers_of_one_workspace_slow_neither_dialing_nor_others_deliveries(make_stack):
    stack = make_stack(webhooks_worker=True)
    healthy, silent = Receiver(), SilentReceiver()
    try:
        a_client, a_agent, a_number = setup_workspace(stack)
        b_client, b_agent, b_number = setup_workspace(stack)
        _register(a_client, healthy.url, event_types=["call.ended"])
        a_workspace = _workspace(stack, a_client)

        # A first batch warms every process up; the second is timed without B's load.
        _run_batch(stack, a_client, a_agent, a_number, 0)
        alone_start = time.time()
        without_load = _run_batch(stack, a_client, a_agent, a_number, BATCH_SIZE)
        wait_for(lambda: len(healthy.delivered()) >= 2 * BATCH_SIZE, 30, what="A's deliveries")
        alone_latency = _latency(stack, a_workspace, alone_start)

        _register(b_client, silent.url, event_types=["call.ended"])
        for i in range(BAD_NAMES):
            _register(b_client, f"https://hook-{i}.invalid/x", event_types=["call.ended"])
        b_workspace = _workspace(stack, b_client)
        response = submit(b_client, b_agent, b_number, recipients(B_CALLS, "+1646558", 0))
        assert response.status_code == 200, response.text
        b_deliveries = B_CALLS * (BAD_NAMES + 1)
        wait_for(
            lambda: (
                stack.sql(
                    "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = %s", b_workspace
                )[0][0]
                == b_deliveries
            ),
            60,
            what="every call of B to end",
        )

        loaded_start = time.time()
        with_load = _run_batch(stack, a_client, a_agent, a_number, 2 * BATCH_SIZE)
        # B's backlog was there the whole time: none of it could be delivered.
        backlog = _pending(stack, b_workspace)
        assert backlog > b_deliveries // 2, backlog

        wait_for(
            lambda: len(healthy.delivered()) >= 3 * BATCH_SIZE,
            30,
            what="A's deliveries of the second batch",
            describe=lambda: f"{len(healthy.delivered())} delivered",
        )
        count, median, slowest = _latency(stack, a_workspace, loaded_start)
        print(
            f"\nA's batch of {BATCH_SIZE}: {without_load:.2f} s alone, {with_load:.2f} s beside "
            f"B's backlog ({backlog} of {b_deliveries} pending after it); A's deliveries from "
            f"the call's end: median {alone_latency[1]:.2f} s, slowest {alone_latency[2]:.2f} "
            f"s alone; median {median:.2f} s, slowest {slowest:.2f} s beside B's backlog"
        )
        assert count == BATCH_SIZE
        # Held behind B's receivers, A's batch and A's deliveries would wait out B's silent
        # receiver: its timeout at least (then minutes, with 30 of them in B's backlog). The
        # bound is that timeout, not a margin on the figures alone, which a busy machine (the
        # rest of the suite beside this test) stretches by seconds.
        assert with_load < without_load + RECEIVER_TIMEOUT_S
        assert slowest < RECEIVER_TIMEOUT_S

        # B's deliveries go on meanwhile: every unresolvable endpoint is tried until its breaker
        # opens (five attempts without an answer), then left alone: no more attempts while the
        # rest of its deliveries wait for the cool-down.
        tries = (
            "SELECT count(*) FILTER (WHERE tries >= 5), max(tries) FROM (SELECT e.id, "
            "sum(d.attempts) AS tries FROM webhook_endpoints e JOIN webhook_deliveries d "
            "ON d.endpoint_id = e.id WHERE e.workspace_id = %s AND e.url LIKE '%%.invalid%%' "
            "GROUP BY e.id) per_endpoint"
        )
        wait_for(
            lambda: stack.sql(tries, b_workspace)[0][0] == BAD_NAMES,
            120,
            what="every unresolvable endpoint of B to be tried until its breaker opens",
            describe=lambda: str(stack.sql(tries, b_workspace)),
        )
        # Five, and at most one more that was already in flight when the fifth failed (two per
        # endpoint at a time), unless a cool-down of 30 s has passed since (one probe each).
        assert stack.sql(tries, b_workspace)[0][1] <= 7
        assert len(silent.accepted) <= 7
    finally:
        healthy.close()
        silent.close()
