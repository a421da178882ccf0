"""An isolated stack: API, Celery workers and beat in child processes on a database and a Redis
key prefix (or RabbitMQ virtual host) of their own, dialing an in-process sandbox carrier on
loopback. What the tests and the benchmarks run against, started by the same supervisor, with
the same command lines and environment, as ``launch_stack``'s dev stack."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.stack.commands import (
    WEBHOOKS_WORKER_QUEUES,
    WORKER_QUEUES,
    api_command,
    beat_command,
    child_environment,
    flower_command,
    metrics_environment,
    unique_node,
    worker_command,
)
from cli.stack.databases import create_database, drop_database
from cli.stack.forkserver import ForkServer
from cli.stack.net import LOCALHOST, PROJECT_ROOT, free_port, wait_for
from cli.stack.processes import ChildProcess, ProcessSupervisor, signal_group
from cli.stack.services import rabbitmq_vhost

# The queues of the main workers; webhook deliveries run in a worker of their own
# (``Stack.start_webhooks_worker``), as every deployment runs them.
ALL_QUEUES = WORKER_QUEUES
WEBHOOKS_QUEUE = WEBHOOKS_WORKER_QUEUES
# What a worker logs at INFO as it takes a task and as the task ends.
_TASK_EVENT = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] (received|succeeded|raised|retry)")
# The RabbitMQ server the RabbitMQ tests use; each test gets a virtual host of its own on it.
RABBITMQ_URL = os.environ.get("SWITCHBOARD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

# The recounts that docs/ARCHITECTURE.md "Counters (exact definitions)" gives for a batch's
# counters: recipients, dispatched, finished, retries, and final recipients.
RECOUNT = """
SELECT count(*),
       count(*) FILTER (WHERE first_dispatched_at IS NOT NULL),
       count(*) FILTER (WHERE status IN ('completed', 'failed', 'voicemail')),
       coalesce(sum(greatest(attempts - 1, 0)), 0),
       count(*) FILTER (WHERE status IN ('completed', 'failed', 'voicemail', 'cancelled'))
FROM calls WHERE batch_id = %s
"""

# The settings an isolated stack runs with, whatever the shell says (a test passes its own in
# ``settings_env``): the sandbox only, ticks every second, recovery within seconds.
ISOLATED_SETTINGS = {
    "SWITCHBOARD_TWILIO_ACCOUNT_SID": "",
    "SWITCHBOARD_TICK_INTERVAL_S": "1",
    # Tests must not depend on the hour they run at; window tests set their own.
    "SWITCHBOARD_DEFAULT_CALLING_WINDOW": "00:00-24:00",
    # Webhook receivers in tests run on loopback.
    "SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS": "true",
    # One caller number dials everything here; the pacing test sets its own limits.
    "SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER": "1000",
    "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": "1000",
    "SWITCHBOARD_REDRIVE_AFTER_S": "3",
    "SWITCHBOARD_DIAL_STALE_AFTER_S": "12",
    "SWITCHBOARD_LIVE_CALL_CHECK_S": "30",
    "SWITCHBOARD_PROVIDER_TIMEOUT_S": "2",
    "SWITCHBOARD_DB_POOL_SIZE": "10",
}


def _new_secrets_key() -> str:
    from shared.connections.secrets import new_key

    return new_key()


@dataclass
class Stack:
    """One isolated Switchboard deployment; ``carrier`` is a started ``SandboxCarrier``."""

    database_url: str
    redis_url: str
    redis_prefix: str
    carrier: Any
    log_dir: Path
    api_port: int = field(default_factory=free_port)
    settings_env: dict[str, str] = field(default_factory=dict)
    # Celery's broker when it is not the Redis above (a RabbitMQ virtual host of its own).
    broker_url: str | None = None
    # Encrypts the stack's provider connections (a fresh development key per stack).
    secrets_key: str = field(default_factory=_new_secrets_key)
    # The processes started and not killed, by name (a test may forget one here).
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    # The worker that runs beat inside it (``-B``), if one does rather than a beat process.
    beat_host: str | None = None
    # Starts the API and the workers already past their imports (``cli/stack/forkserver.py``).
    fork_server: ForkServer | None = None
    supervisor: ProcessSupervisor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.supervisor = ProcessSupervisor(
            log_dir=self.log_dir, stop_timeout=15.0, fork_server=self.fork_server
        )

    @property
    def api_url(self) -> str:
        return f"http://{LOCALHOST}:{self.api_port}"

    @property
    def metrics_dir(self) -> Path:
        """The Prometheus multiprocess directory the API and the workers share."""
        return self.log_dir / "metrics"

    def env(self) -> dict[str, str]:
        """The environment every process of this stack runs with."""
        overrides = {
            **ISOLATED_SETTINGS,
            "SWITCHBOARD_REDIS_KEY_PREFIX": self.redis_prefix,
            "SWITCHBOARD_PUBLIC_BASE_URL": self.api_url,
            "SWITCHBOARD_SECRETS_KEY": self.secrets_key,
        }
        if self.broker_url is not None:
            overrides["SWITCHBOARD_BROKER_URL"] = self.broker_url
        overrides.update(self.settings_env)
        return child_environment(
            self.database_url,
            self.redis_url,
            api_url=self.api_url,
            sandbox_url=self.carrier.base_url,
            defaults={},
            overrides=overrides,
        )

    def metrics_env(self) -> dict[str, str]:
        """The environment of the processes that record metrics (the API and the workers), as
        the dev stack runs them: sharing one multiprocess directory."""
        return metrics_environment(self.env(), self.metrics_dir)

    def _spawn(
        self, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> ChildProcess:
        process = self.supervisor.start(
            name, argv, env=env if env is not None else self.env(), cwd=PROJECT_ROOT
        )
        self.processes[name] = process
        return process

    def start_api(self) -> None:
        """uvicorn on 127.0.0.1, waiting until /healthz answers."""
        self._spawn("api", api_command(self.api_port, "warning"), env=self.metrics_env())
        self.supervisor.wait_http(f"{self.api_url}/healthz", 30, names=["api"])

    def start_worker(
        self,
        name: str = "worker",
        queues: str = ALL_QUEUES,
        pool: str = "threads",
        concurrency: int = 8,
        loglevel: str = "INFO",
        events: bool = False,
        env: dict[str, str] | None = None,
        beat: bool = False,
    ) -> ChildProcess:
        """A real Celery worker process consuming ``queues``; with ``events``, it sends task
        events (``-E``) as workers watched in Flower do; with ``beat``, it runs beat too
        (``-B``: a child forked from the worker, the same scheduler as ``start_beat``'s,
        without a process of its own to start)."""
        argv = worker_command(
            queues,
            unique_node(name),
            pool=pool,
            concurrency=concurrency,
            events=events,
            loglevel=loglevel,
            gossip=False,
            beat_schedule=self._beat_schedule if beat else None,
        )
        if beat:
            self.beat_host = name
        return self._spawn(name, argv, env=env if env is not None else self.metrics_env())

    def start_webhooks_worker(self, name: str = "webhooks", concurrency: int = 8) -> ChildProcess:
        """The worker that sends webhook deliveries, and nothing else."""
        return self.start_worker(name=name, queues=WEBHOOKS_QUEUE, concurrency=concurrency)

    @property
    def _beat_schedule(self) -> Path:
        return self.log_dir / "beat-schedule"

    def start_beat(self) -> None:
        """Celery beat with the tick schedule (every second here)."""
        self._spawn("beat", beat_command(self._beat_schedule))

    def start_flower(self, port: int, user: str, password: str) -> ChildProcess:
        """Flower on 127.0.0.1:``port`` with basic auth, on this stack's broker and prefix."""
        return self._spawn("flower", flower_command(port, user, password))

    def task_events(self, task: str) -> dict[str, set[str]]:
        """What the workers' logs say of each ``task`` message so far: its id, and which of
        received / succeeded / raised / retry were logged for it."""
        events: dict[str, set[str]] = {}
        for log in self.log_dir.glob("*.log"):
            for name, task_id, event in _TASK_EVENT.findall(log.read_text(errors="replace")):
                if name == task:
                    events.setdefault(task_id, set()).add(event)
        return events

    def tick_ids(self) -> set[str]:
        """The ticks the workers have taken so far."""
        from shared import messaging

        return set(self.task_events(messaging.TASK_TICK))

    def ticks_since(self, earlier: set[str]) -> int:
        """How many ticks taken after ``earlier`` (a ``tick_ids()``) have run to the end: each
        read the database after whatever happened before ``earlier`` was read."""
        from shared import messaging

        return sum(
            1
            for task_id, events in self.task_events(messaging.TASK_TICK).items()
            if task_id not in earlier and "succeeded" in events
        )

    def wait_for_ticks(self, count: int = 1, timeout: float = 30) -> None:
        """Wait until ``count`` ticks that a worker took after this call have run to the end."""
        earlier = self.tick_ids()
        wait_for(
            lambda: self.ticks_since(earlier) >= count,
            timeout,
            what=f"{count} tick(s) to run",
            describe=lambda: f"{self.ticks_since(earlier)} ran",
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group (a worker and its pool children) and reap it. A worker
        that runs beat (``embed_beat``) is not killed: beat would go with it, which no
        deployment's worker does; such a test starts its stack with ``embed_beat=False``."""
        if name == self.beat_host:
            raise ValueError(
                f"{name} runs beat (embed_beat): start the stack with embed_beat=False to kill it"
            )
        process = self.processes.pop(name)
        signal_group(process.pid, sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL for stragglers."""
        self.supervisor.stop()
        self.processes.clear()

    def client(self, api_key: str) -> Any:
        """An HTTP client (``httpx.Client``) authenticated as a workspace."""
        import httpx

        return httpx.Client(base_url=self.api_url, headers={"x-api-key": api_key}, timeout=60)

    def raw_client(self) -> Any:
        """An HTTP client (``httpx.Client``) without credentials."""
        import httpx

        return httpx.Client(base_url=self.api_url, timeout=60)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query against the stack's database (for recounts and assertions)."""
        import psycopg2
        from sqlalchemy.engine import make_url

        connection = psycopg2.connect(
            make_url(self.database_url)
            .render_as_string(hide_password=False)
            .replace("postgresql+psycopg2", "postgresql")
        )
        try:
            with connection, connection.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            connection.close()


def new_api_key(stack: Stack, workspace: str | None = None) -> str:
    """A fresh workspace in the stack's database and an API key for it."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from shared.workspaces.service import create_api_key

    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session:
            key = create_api_key(session, workspace or f"ws-{uuid.uuid4().hex[:8]}")
            session.commit()
        return key
    finally:
        engine.dispose()


@contextlib.contextmanager
def migrated_template(server_url: str, prefix: str = "sbtest_template_") -> Iterator[str]:
    """A database at the newest migration, for isolated stacks to copy; its name. Dropped on
    exit (nobody may stay connected to a template: migrate disposes of its engines)."""
    from shared.db import migrate

    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    migrate(create_database(server_url, name))
    try:
        yield name
    finally:
        drop_database(server_url, name)


@contextlib.contextmanager
def running_stack(
    server_url: str,
    template: str,
    redis_url: str,
    tmp: Path,
    sandbox: dict[str, Any] | None = None,
    settings_env: dict[str, str] | None = None,
    workers: int = 1,
    beat: bool = True,
    concurrency: int = 8,
    webhooks_worker: bool = True,
    broker_url: str | None = None,
    embed_beat: bool = False,
    fork_server: ForkServer | None = None,
) -> Iterator[Stack]:
    """A fresh database from the migrated template, a key prefix, a carrier, API and workers:
    ``workers`` on every queue but webhooks, and (unless ``webhooks_worker`` is false) one
    webhooks worker. A test may start others as it likes (``Stack.start_worker``). Celery's
    broker is the Redis of ``redis_url`` unless ``broker_url`` names another
    (``isolated_rabbitmq_vhost``). With ``beat``, beat runs in a process of its own, or with
    ``embed_beat`` (and a worker to host it) inside the first worker: one process fewer to
    start, for a stack whose workers the test never kills. With a ``fork_server`` the API and the
    workers start as its children (the test suite's stacks do)."""
    from sandbox import SandboxCarrier, SandboxConfig

    name = f"sbtest_{uuid.uuid4().hex[:10]}"
    database_url = create_database(server_url, name, template)
    carrier = SandboxCarrier(SandboxConfig.from_dict(sandbox or {})).start()
    tmp.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"{name}:",
        carrier=carrier,
        log_dir=tmp,
        settings_env=settings_env or {},
        broker_url=broker_url,
        fork_server=fork_server,
    )
    try:
        stack.start_api()
        embedded = beat and embed_beat and workers > 0
        for index in range(workers):
            stack.start_worker(
                name=f"worker{index}", concurrency=concurrency, beat=embedded and index == 0
            )
        if webhooks_worker:
            stack.start_webhooks_worker()
        if beat and not embedded:
            stack.start_beat()
        yield stack
    finally:
        stack.stop()
        carrier.stop()
        drop_database(server_url, name)


def isolated_rabbitmq_vhost() -> contextlib.AbstractContextManager[str]:
    """A virtual host of its own on ``RABBITMQ_URL``'s server, deleted afterwards with every
    queue in it; the broker URL naming it. A server that does not answer fails the test."""
    return rabbitmq_vhost(RABBITMQ_URL, "sbtest_", strict=True, announce=lambda _text: None)
