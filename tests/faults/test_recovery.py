"""Fault injection: Switchboard recovers by itself, in seconds, from crashes.

A. A 1,000-recipient batch on a PostgreSQL and a Redis of the test's own, at the product's
   default settings except the calling window and the account's pace (50 calls per second, as
   bought from the provider), through every crash in turn: two workers SIGKILLed, Redis
   restarted empty, PostgreSQL restarted, the API down for 10 s, beat replaced. Every
   recipient ends final exactly once, the counters equal their recounts, no number is dialed
   twice for one attempt nor after its call became final.
B. A worker SIGKILLed between claiming a retry attempt and dialing it: dialed once more.
C. Cancel right after a worker's SIGKILL, and pause with a live worker, answer within 2 s and
   no call is placed after their response.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.db import migrate
from shared.settings import Settings
from tests.conftest import new_api_key
from tests.factories import create_agent, recipients, register_number, submit
from tests.faults.servers import OwnPostgres, OwnRedis
from tests.support import (
    RECOUNT,
    Stack,
    create_database,
    drop_database,
    running_stack,
    wait_for,
)

FINAL = ("completed", "failed", "voicemail", "cancelled")
COUNTERS = (
    "total_calls_scheduled",
    "total_calls_dispatched",
    "total_calls_finished",
    "retry_count",
)

RECIPIENT_ROWS = """
SELECT position, phone_number, status, outcome, attempts, provider_call_sid, attempt_history,
       extract(epoch FROM ended_at)::float8
FROM calls WHERE batch_id = %s ORDER BY position
"""


def product_default(name: str) -> str:
    """The default of a setting in shared/settings.py, as an environment value (empty for
    one unset by default)."""
    default = Settings.model_fields[name].default
    return "" if default is None else str(default)


# What the harness sets that a deployment on loopback needs too, or that only isolates the
# test: kept as the harness sets them.
HARNESS_SETTINGS_KEPT = frozenset(
    {
        "env",
        "redis_key_prefix",
        "public_base_url",
        "sandbox_url",
        "twilio_account_sid",
        "default_calling_window",
        "webhook_allow_private_destinations",
    }
)


def product_default_env(*required: str) -> dict[str, str]:
    """Every setting the harness overrides to be test-friendly (the pace, the tick, the
    recovery thresholds, ...) back at its default in shared/settings.py. ``required`` names
    settings that must exist (a KeyError fails the test if one is renamed)."""
    env = {f"SWITCHBOARD_{name.upper()}": product_default(name) for name in required}
    harness = Stack("", "", "", carrier=_NoCarrier(), log_dir=Path()).env()  # type: ignore[arg-type]
    for key, value in harness.items():
        name = key.removeprefix("SWITCHBOARD_").lower()
        if (
            key.startswith("SWITCHBOARD_")
            and os.environ.get(key) != value
            and name in Settings.model_fields
            and name not in HARNESS_SETTINGS_KEPT
        ):
            env[key] = product_default(name)
    # A harness override of a setting the product no longer has is ignored by Settings.
    return env


class _NoCarrier:
    base_url = ""


def recount(stack: Stack, batch_id: str) -> dict[str, int]:
    """The batch's counters recounted from its calls."""
    total, dispatched, finished, retries, final = stack.sql(RECOUNT, batch_id)[0]
    return {
        "total_calls_scheduled": total,
        "total_calls_dispatched": dispatched,
        "total_calls_finished": finished,
        "retry_count": int(retries),
        "final": final,
    }


def counter_mismatches(stack: Stack, batch: dict[str, Any]) -> list[str]:
    """Each counter of the batch response that differs from its recount."""
    counted = recount(stack, batch["id"])
    return [
        f"{name} is {batch[name]}, recount {counted[name]}"
        for name in COUNTERS
        if batch[name] != counted[name]
    ]


def batch_state(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/voiceai/batch-calling/{batch_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def count_calls(stack: Stack, batch_id: str, statuses: tuple[str, ...]) -> int:
    """How many of the batch's calls are in one of ``statuses``."""
    query = "SELECT count(*) FROM calls WHERE batch_id = %s AND status IN %s"
    return int(stack.sql(query, batch_id, statuses)[0][0])


def final_count(stack: Stack, batch_id: str) -> int:
    return count_calls(stack, batch_id, FINAL)


def dials_by_number(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """The sandbox's record of the calls it was asked to place, by number dialed."""
    placed: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for call in stack.carrier.calls():
        placed[call["to"]].append(call)
    return placed


def workspace(stack: Stack, caller_numbers: int = 1) -> tuple[httpx.Client, str, list[str]]:
    """A client of a new workspace, an agent and ``caller_numbers`` registered caller numbers."""
    client = stack.client(new_api_key(stack))
    agent_id = create_agent(client)
    numbers = [register_number(client, f"+1202555{100 + i:04d}") for i in range(caller_numbers)]
    return client, agent_id, numbers


def audit_recipients(
    stack: Stack, batch_id: str, expected: int
) -> tuple[list[str], collections.Counter[str]]:
    """What the calls table and the sandbox's record say against the invariants: every
    recipient once and final; per recipient, one sandbox call per attempt, each attempt's SID
    a distinct sandbox call to its number; no call placed after the recipient became final.
    Returns the violations (a few examples of each) and the recipients per outcome."""
    rows = stack.sql(RECIPIENT_ROWS, batch_id)
    placed = dials_by_number(stack)
    problems: dict[str, list[str]] = collections.defaultdict(list)
    outcomes: collections.Counter[str] = collections.Counter()
    positions = collections.Counter(row[0] for row in rows)
    if len(rows) != expected or set(positions) != set(range(expected)):
        problems["recipients once each"].append(
            f"{len(rows)} rows for {expected} recipients, "
            f"repeated positions {[p for p, n in positions.items() if n > 1][:5]}"
        )
    numbers = set()
    for position, number, status, outcome, attempts, sid, history, ended_at in rows:
        numbers.add(number)
        outcomes[f"{status}/{outcome}"] += 1
        where = f"#{position} {number} ({status}/{outcome}, attempts {attempts})"
        if status not in FINAL:
            problems["every recipient final"].append(where)
        calls = placed.get(number, [])
        if len(calls) != attempts:
            problems["sandbox dials == attempts"].append(f"{where}: {len(calls)} dials")
        history_sids = [e.get("provider_call_sid") for e in history if e.get("provider_call_sid")]
        sids = set(history_sids) | ({sid} if sid else set())
        sandbox_sids = {call["sid"] for call in calls}
        if len(history_sids) != len(set(history_sids)) or sids != sandbox_sids:
            problems["attempt SIDs are the distinct sandbox calls"].append(
                f"{where}: history {history_sids}, current {sid}, sandbox {sorted(sandbox_sids)}"
            )
        if status in FINAL and ended_at is None:
            problems["final calls have ended_at"].append(where)
        late = [
            c["created_at"] - ended_at for c in calls if ended_at and c["created_at"] > ended_at
        ]
        if late:
            problems["no dial after the call became final"].append(
                f"{where}: {len(late)} dial(s), up to {max(late):.2f} s after ended_at"
            )
    strangers = set(placed) - numbers
    if strangers:
        problems["no dial to a number outside the batch"].append(str(sorted(strangers)[:5]))
    return [
        f"{name}: {len(found)} violation(s), e.g. {found[:3]}" for name, found in problems.items()
    ], outcomes


# --------------------------------------------------------------------------------------------
# A. The full fault test


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[tuple[OwnPostgres, OwnRedis, str]]:
    """A PostgreSQL and a Redis of this test's own (it restarts them), and a migrated template
    database on that PostgreSQL."""
    postgres = OwnPostgres(tmp_path / "services")
    broker: OwnRedis | None = None
    try:
        broker = OwnRedis(tmp_path / "services")
        template = f"sbfault_template_{uuid.uuid4().hex[:8]}"
        migrate(create_database(postgres.url, template))
        yield postgres, broker, template
        if not postgres.running:
            postgres.start()
        drop_database(postgres.url, template)
    finally:
        if broker is not None:
            broker.close()
        postgres.close()


@dataclass
class Fault:
    name: str
    started: float
    ended: float = 0.0


@dataclass
class WorkerSupervisor:
    """What a deployment's process supervisor does for the workers (docker-compose's
    ``restart: unless-stopped``, systemd's ``Restart=always``): a worker that exits on its own
    is started again within a second. Celery exits a worker on some broker losses (its Redis
    transport fails to hand unacknowledged messages back over a connection that is gone); the
    workers the test kills itself are not in ``stack.processes`` any more, so they stay dead.
    Every restart is reported."""

    stack: Stack
    restarts: list[tuple[float, str, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WorkerSupervisor:
        self._thread = threading.Thread(target=self._run, daemon=True, name="supervisor")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, process in list(self.stack.processes.items()):
                if name.startswith("worker") and process.poll() is not None:
                    self.stack.processes.pop(name, None)
                    self.restarts.append((time.time(), name, process.returncode))
                    self.stack.start_worker(name=f"{name}r{len(self.restarts)}")
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class ProgressMonitor:
    """Samples, every quarter second, how many recipients are final (None while the database
    cannot be read) and how many calls the sandbox was asked to place."""

    stack: Stack
    batch_id: str
    samples: list[tuple[float, int | None, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ProgressMonitor:
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                finals: int | None = final_count(self.stack, self.batch_id)
            except Exception:  # the database is down or restarting: that is the fault
                finals = None
            self.samples.append((now, finals, self.stack.carrier.stats()["calls_created"]))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def resumed_after(self, moment: float) -> tuple[float | None, float | None]:
        """Seconds from ``moment`` to the first increase of final recipients, and of dials,
        over their values at ``moment`` (None: none seen)."""
        before = [s for s in self.samples if s[0] <= moment]
        finals_then = max((s[1] for s in before if s[1] is not None), default=0)
        dials_then = before[-1][2] if before else 0
        final_at = next(
            (s[0] for s in self.samples if s[0] > moment and (s[1] or 0) > finals_then), None
        )
        dial_at = next((s[0] for s in self.samples if s[0] > moment and s[2] > dials_then), None)
        return (
            None if final_at is None else final_at - moment,
            None if dial_at is None else dial_at - moment,
        )


FAULT_SANDBOX: dict[str, Any] = {
    "seed": 17,
    "rules": [
        {
            "pattern": "*",
            "outcome": {
                "completed": 0.45,
                "busy": 0.2,
                "no-answer": 0.15,
                "voicemail": 0.1,
                "failed": 0.1,
            },
            # Calls long enough that the 200 live-call slots, not pacing, bound the rate, so
            # the batch is still under way when the last fault comes.
            "ring_seconds": 4.0,
            "talk_seconds": 8.0,
        }
    ],
}
FAULT_RECIPIENTS = 1000
CALLER_POOL = 50
# The account's calls per second, as bought from the provider, for the full fault run.
BOUGHT_CALLS_PER_SECOND = 50
# Between two faults, and the API's downtime.
FAULT_GAP_S = 5.0
API_DOWN_S = 10.0
# After the last fault, the batch must be complete within this generous, finite bound. The
# slowest recovery the product's defaults allow is that of an answered call whose final
# callback was lost while the API was down: it is looked up at the provider once no callback
# has come for live_call_check_s (120 s). Measured on the code this test was written against:
# the batch had not completed 300 s after the last fault (live-call slots of calls whose
# final callback was lost stay taken, so the tick re-drives about one call a second).
COMPLETION_BOUND_S = 180.0
RESUME_BOUND_S = 60.0


@pytest.mark.timeout(600)
def test_a_batch_survives_every_crash_in_turn(
    own_servers: tuple[OwnPostgres, OwnRedis, str], tmp_path: Path
) -> None:
    postgres, broker, template = own_servers
    settings_env = product_default_env(
        "calls_per_second_per_number",
        "calls_per_second_per_account",
        "redrive_after_s",
        "dial_stale_after_s",
        "provider_timeout_s",
        "tick_interval_s",
    )
    # Every setting at its product default except the calling window and the account's pace:
    # 50 calls per second, as for a Twilio account that bought them (the default, 1, is
    # Twilio's own default, and would leave the batch dialing when the faults come).
    settings_env["SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT"] = str(BOUGHT_CALLS_PER_SECOND)
    print(f"\nproduct settings: {settings_env}")
    with running_stack(
        postgres.url,
        template,
        broker.url,
        tmp_path / "stack",
        sandbox=FAULT_SANDBOX,
        settings_env=settings_env,
        workers=3,
    ) as stack:
        try:
            _run_fault_sequence(stack, postgres, broker)
        finally:
            # Whatever failed, the stack stops against a running database and broker.
            if not broker.running:
                broker.start()
            if not postgres.running:
                postgres.start()
            print(f"logs: {stack.log_dir}")


def _run_fault_sequence(stack: Stack, postgres: OwnPostgres, broker: OwnRedis) -> None:
    client, agent_id, caller_ids = workspace(stack, CALLER_POOL)
    policy = {"max_attempts": 3, "retry_on": ["busy", "no_answer"], "delays_s": [2]}
    submitted_at = time.time()
    response = submit(
        client,
        agent_id,
        None,
        recipients(FAULT_RECIPIENTS),
        agent_phone_number_ids=caller_ids,
        retry_policy=policy,
        telephony_call_config={"ringing_timeout_secs": 10},
    )
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    assert len(response.json()["phone_number_ids"]) == CALLER_POOL
    monitor = ProgressMonitor(stack, batch_id).start()
    supervisor = WorkerSupervisor(stack).start()
    faults: list[Fault] = []
    failures: list[str] = []
    try:
        wait_for(
            lambda: final_count(stack, batch_id) >= 100,
            120,
            what="100 recipients to be final before the first fault",
        )

        fault = Fault("SIGKILL worker0 and worker1, two new workers", time.time())
        stack.kill("worker0")
        stack.kill("worker1")
        stack.start_worker(name="worker3")
        stack.start_worker(name="worker4")
        fault.ended = time.time()
        faults.append(fault)
        time.sleep(FAULT_GAP_S)

        fault = Fault("Redis killed, restarted empty after 2 s", time.time())
        broker.restart_empty(down_s=2.0)
        fault.ended = time.time()
        faults.append(fault)
        time.sleep(FAULT_GAP_S)

        fault = Fault("PostgreSQL stopped (immediate), started after 3 s", time.time())
        postgres.stop("immediate")
        time.sleep(3.0)  # the fault's duration
        postgres.start()
        fault.ended = time.time()
        faults.append(fault)
        time.sleep(FAULT_GAP_S)

        fault = Fault(f"API SIGKILLed, started again after {API_DOWN_S:.0f} s", time.time())
        stack.kill("api")
        time.sleep(API_DOWN_S)  # the fault's duration: the sandbox's callbacks fail meanwhile
        stack.start_api()
        fault.ended = time.time()
        faults.append(fault)
        time.sleep(FAULT_GAP_S)

        fault = Fault("beat SIGKILLed, a new beat", time.time())
        stack.kill("beat")
        stack.start_beat()
        fault.ended = time.time()
        faults.append(fault)
        last_fault = fault.ended

        finals_then = final_count(stack, batch_id)
        assert finals_then < FAULT_RECIPIENTS, (
            "the batch was over before the last fault: it proves nothing about recovering "
            "from it (make the batch longer)"
        )
        try:
            wait_for(
                lambda: final_count(stack, batch_id) > finals_then,
                RESUME_BOUND_S,
                interval=0.25,
                what="a recipient to become final after the last fault",
            )
        except AssertionError as error:
            failures.append(f"progress resumes within {RESUME_BOUND_S:.0f} s: {error}")

        try:
            wait_for(
                lambda: (
                    stack.sql("SELECT status FROM batches WHERE id = %s", batch_id)[0][0]
                    == "completed"
                ),
                last_fault + COMPLETION_BOUND_S - time.time(),
                interval=1.0,
                what="the batch to complete",
                describe=lambda: _describe_left(stack, batch_id),
            )
        except AssertionError as error:
            failures.append(
                f"batch completes within {COMPLETION_BOUND_S:.0f} s of the last fault: {error}"
            )
        done_at = time.time()
    finally:
        monitor.stop()
        supervisor.stop()

    batch = batch_state(client, batch_id)
    problems, outcomes = audit_recipients(stack, batch_id, FAULT_RECIPIENTS)
    failures += problems
    failures += [f"counter: {m}" for m in counter_mismatches(stack, batch)]

    print(f"batch {batch_id}: {batch['status']}; timeline (s from submit):")
    for fault in faults:
        to_final, to_dial = monitor.resumed_after(fault.ended)
        print(
            f"  {fault.started - submitted_at:7.1f} .. {fault.ended - submitted_at:7.1f}  "
            f"{fault.name}: next final recipient after {_seconds(to_final)}, "
            f"next dial after {_seconds(to_dial)}"
        )
    print(
        f"  last fault at {last_fault - submitted_at:.1f} s; batch "
        f"{'completed' if batch['status'] == 'completed' else 'NOT completed'} at "
        f"{done_at - submitted_at:.1f} s ({done_at - last_fault:.1f} s after the last fault)"
    )
    print(f"  final recipients every 10 s: {_curve(monitor, submitted_at, done_at)}")
    print(
        "  workers that exited on their own and were restarted: "
        + (
            ", ".join(
                f"{name} (exit {code}) at {at - submitted_at:.1f} s"
                for at, name, code in supervisor.restarts
            )
            or "none"
        )
    )
    print(f"  sandbox calls placed: {stack.carrier.stats()['calls_created']}")
    print(f"  recipients by status/outcome: {dict(sorted(outcomes.items()))}")
    print(f"  counters: { {name: batch[name] for name in COUNTERS} }")
    print(f"  recounts: {recount(stack, batch_id)}")
    print(f"  sandbox stats: {stack.carrier.stats()}")
    for failure in failures:
        print(f"  FAILED {failure}")
    assert not failures, "\n".join(failures)


def _curve(monitor: ProgressMonitor, start: float, end: float) -> str:
    points = []
    for mark in range(0, int(end - start) + 10, 10):
        known = [s[1] for s in monitor.samples if s[0] <= start + mark and s[1] is not None]
        points.append(f"{mark}s:{known[-1] if known else '?'}")
    return " ".join(points)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _describe_left(stack: Stack, batch_id: str) -> str:
    rows = stack.sql(
        "SELECT status, count(*), max(extract(epoch FROM now() - updated_at))::int "
        "FROM calls WHERE batch_id = %s AND status NOT IN %s GROUP BY status",
        batch_id,
        FINAL,
    )
    return "not final (status, count, seconds since the oldest update): " + repr(rows)


# --------------------------------------------------------------------------------------------
# B. A worker killed after claiming a retry attempt, before dialing it

RETRY_NUMBER = "+16465557000"


def test_a_worker_killed_between_claiming_a_retry_and_dialing_it(make_stack: Any) -> None:
    # The number answers busy, then completed. At 0.2 calls/s per caller number, attempt 2
    # (due 1 s after attempt 1 ended) is claimed and then waits about 3 s for its pacing slot,
    # 5 s after attempt 1's: the worker is killed in that wait.
    stack = make_stack(
        embed_beat=False,
        sandbox={"rules": [{"pattern": RETRY_NUMBER, "outcome_sequence": ["busy", "completed"]}]},
        settings_env={
            "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": "0.2",
            "SWITCHBOARD_MAX_PACING_SLEEP_S": "10",
        },
        workers=1,
    )
    client, agent_id, (number_id,) = workspace(stack)
    policy = {"max_attempts": 2, "retry_on": ["busy"], "delays_s": [1]}
    response = submit(client, agent_id, number_id, [_recipient(RETRY_NUMBER)], retry_policy=policy)
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    ((call_id,),) = stack.sql("SELECT id FROM calls WHERE batch_id = %s", batch_id)

    def call_row() -> list[tuple[Any, ...]]:
        return stack.sql("SELECT status, attempts FROM calls WHERE id = %s", call_id)

    wait_for(
        lambda: call_row() == [("dialing", 1)],
        30,
        interval=0.05,
        what="attempt 2 to be claimed",
        describe=lambda: f"call {call_row()}, dials {len(stack.carrier.calls())}",
    )
    stack.kill("worker0")
    killed_at = time.time()
    # The premise: the worker died holding the claim, before dialing attempt 2.
    assert len(dials_by_number(stack)[RETRY_NUMBER]) == 1, "attempt 2 was dialed before the kill"
    assert call_row() == [("dialing", 1)], call_row()
    stack.start_worker(name="worker1")

    failures: list[str] = []
    try:
        wait_for(
            lambda: (
                stack.sql("SELECT status FROM batches WHERE id = %s", batch_id) == [("completed",)]
            ),
            60,
            interval=0.25,
            what="the batch to complete",
            describe=lambda: f"call {call_row()}, dials {len(stack.carrier.calls())}",
        )
    except AssertionError as error:
        failures.append(str(error))
    batch_status = stack.sql("SELECT status FROM batches WHERE id = %s", batch_id)
    print(
        f"\nretry claim killed: batch {batch_status} {time.time() - killed_at:.1f} s after the "
        f"kill; call {call_row()}; "
        f"dials {[(c['sid'], c['outcome']) for c in stack.carrier.calls()]}"
    )
    dials = dials_by_number(stack)[RETRY_NUMBER]
    if len(dials) != 2:
        failures.append(f"{RETRY_NUMBER} dialed {len(dials)} times in all, not 2")
    ((status, outcome, attempts),) = stack.sql(
        "SELECT status, outcome, attempts FROM calls WHERE id = %s", call_id
    )
    if (status, outcome, attempts) != ("completed", "answered", 2):
        failures.append(f"the call ended {status}/{outcome} after {attempts} attempts")
    problems, _ = audit_recipients(stack, batch_id, 1)
    failures += problems
    failures += [f"counter: {m}" for m in counter_mismatches(stack, batch_state(client, batch_id))]
    print(f"logs: {stack.log_dir}")
    assert not failures, "\n".join(failures)


def _recipient(number: str) -> dict[str, Any]:
    return {
        "phone_number": number,
        "conversation_initiation_client_data": {
            "dynamic_variables": {"first_name": "Ada", "amount": "$1.00"}
        },
    }


# --------------------------------------------------------------------------------------------
# C. Cancel right after a worker's SIGKILL; pause with a live worker

# One caller number at one call a second (a Twilio account's default pace): a worker holds
# several claims that wait for their pacing slots (up to SWITCHBOARD_MAX_PACING_SLEEP_S, 5 s,
# ahead).
SLOW_PACE = {"SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": "1"}
CONTROL_BOUND_S = 2.0
# The killed worker's claims are reconciled this long after they were taken: longer than a
# claim may wait for its pacing slot (5 s) and then for the provider (2 s), as a live worker's
# would. (The harness's default is 12 s.)
CANCEL_STALE_AFTER_S = 7
# Long enough for a stale claim of the killed worker to be reconciled and handed back.
CANCEL_WATCH_S = CANCEL_STALE_AFTER_S + 3.0
# The longest pacing wait of a claim taken before the pause (SWITCHBOARD_MAX_PACING_SLEEP_S);
# the watch goes on until two ticks have run after it.
PAUSE_PACING_S = 5.0


def _under_way(stack: Stack, batch_id: str) -> bool:
    return (
        stack.carrier.stats()["calls_created"] >= 3
        and count_calls(stack, batch_id, ("dialing",)) >= 2
    )


def test_cancel_right_after_a_worker_sigkill_answers_at_once_and_nothing_is_dialed_after(
    make_stack: Any,
) -> None:
    stack = make_stack(
        embed_beat=False,
        sandbox={"rules": [{"pattern": "*", "ring_seconds": 0.5, "talk_seconds": 2.0}]},
        settings_env={
            **SLOW_PACE,
            "SWITCHBOARD_DIAL_STALE_AFTER_S": str(CANCEL_STALE_AFTER_S),
        },
        workers=1,
    )
    client, agent_id, (number_id,) = workspace(stack)
    response = submit(client, agent_id, number_id, recipients(30, "+1646555", 7100))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    wait_for(
        lambda: _under_way(stack, batch_id),
        60,
        interval=0.05,
        what="the worker to hold claims waiting for their pacing slots",
    )
    stack.kill("worker0")
    held = count_calls(stack, batch_id, ("dialing",))
    assert held >= 1, "the killed worker held no claim: the test's premise did not hold"

    started = time.monotonic()
    cancel = client.post(f"/v1/voiceai/batch-calling/{batch_id}/cancel")
    answered_at = time.time()
    took = time.monotonic() - started
    stack.start_worker(name="worker1")

    failures: list[str] = []
    if not cancel.is_success or cancel.json().get("status") != "cancelled":
        failures.append(f"cancel answered {cancel.status_code}: {cancel.text[:300]}")
    if took >= CONTROL_BOUND_S:
        failures.append(f"cancel took {took:.2f} s (bound {CONTROL_BOUND_S} s)")
    try:
        wait_for(
            lambda: final_count(stack, batch_id) == 30,
            60,
            interval=0.25,
            what="every recipient to be final",
            describe=lambda: _describe_left(stack, batch_id),
        )
    except AssertionError as error:
        failures.append(str(error))
    # The observation window, from the cancel's answer (the deliberate part of this test).
    time.sleep(max(0.0, answered_at + CANCEL_WATCH_S - time.time()))
    placed = stack.carrier.calls()
    late = [c for c in placed if c["created_at"] > answered_at]
    if late:
        failures.append(
            f"{len(late)} call(s) placed after the cancel's answer: "
            f"{[(c['to'], round(c['created_at'] - answered_at, 2)) for c in late][:5]}"
        )
    batch = batch_state(client, batch_id)
    if batch["status"] != "cancelled":
        failures.append(f"the batch is {batch['status']}")
    problems, outcomes = audit_recipients(stack, batch_id, 30)
    failures += problems
    failures += [f"counter: {m}" for m in counter_mismatches(stack, batch)]
    print(
        f"\ncancel after SIGKILL: {held} claim(s) held by the killed worker; cancel answered "
        f"{cancel.status_code} in {took:.2f} s; {len(placed)} calls placed, {len(late)} after "
        f"the answer; recipients {dict(outcomes)}; logs: {stack.log_dir}"
    )
    assert not failures, "\n".join(failures)


def test_pause_with_a_live_worker_answers_at_once_and_nothing_is_dialed_while_paused(
    make_stack: Any,
) -> None:
    stack = make_stack(settings_env=SLOW_PACE, workers=1)
    client, agent_id, (number_id,) = workspace(stack)
    response = submit(client, agent_id, number_id, recipients(12, "+1646555", 7200))
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]
    wait_for(
        lambda: _under_way(stack, batch_id),
        60,
        interval=0.05,
        what="the worker to hold claims waiting for their pacing slots",
    )
    held = count_calls(stack, batch_id, ("dialing",))

    started = time.monotonic()
    pause = client.post(f"/v1/voiceai/batch-calling/{batch_id}/pause")
    answered_at = time.time()
    took = time.monotonic() - started

    failures: list[str] = []
    if not pause.is_success or pause.json().get("paused") is not True:
        failures.append(f"pause answered {pause.status_code}: {pause.text[:300]}")
    if took >= CONTROL_BOUND_S:
        failures.append(f"pause took {took:.2f} s (bound {CONTROL_BOUND_S} s)")
    # The observation window while paused (the deliberate part of this test).
    time.sleep(max(0.0, answered_at + PAUSE_PACING_S - time.time()))
    stack.wait_for_ticks(2)
    placed = stack.carrier.calls()
    late = [c for c in placed if c["created_at"] > answered_at]
    if late:
        failures.append(
            f"{len(late)} call(s) placed while paused: "
            f"{[(c['to'], round(c['created_at'] - answered_at, 2)) for c in late][:5]}"
        )

    resume = client.post(f"/v1/voiceai/batch-calling/{batch_id}/resume")
    assert resume.status_code == 200 and resume.json()["paused"] is False, resume.text
    try:
        wait_for(
            lambda: batch_state(client, batch_id)["status"] == "completed",
            60,
            interval=0.5,
            what="the resumed batch to complete",
            describe=lambda: _describe_left(stack, batch_id),
        )
    except AssertionError as error:
        failures.append(str(error))
    batch = batch_state(client, batch_id)
    problems, outcomes = audit_recipients(stack, batch_id, 12)
    failures += problems
    failures += [f"counter: {m}" for m in counter_mismatches(stack, batch)]
    print(
        f"\npause with a live worker: {held} claim(s) held at the pause; pause answered "
        f"{pause.status_code} in {took:.2f} s; {len(placed)} calls placed before resume, "
        f"{len(late)} after the pause's answer; recipients {dict(outcomes)}; "
        f"logs: {stack.log_dir}"
    )
    assert not failures, "\n".join(failures)
