"""A real Switchboard stack (API, Celery workers, beat) in child processes, on a database and
a Redis key prefix of its own, dialing the sandbox carrier on loopback: what the tests and the
benchmarks run against."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from sandbox import SandboxCarrier, SandboxConfig
from shared import messaging
from shared.services.workspaces import create_api_key

ROOT = Path(__file__).resolve().parent.parent
# The queues of the main workers; webhook deliveries run in a worker of their own
# (``Stack.start_webhooks_worker``), as every deployment runs them.
ALL_QUEUES = "batch-control,status,dial"
WEBHOOKS_QUEUE = "webhooks"
# What a worker logs at INFO as it takes a task and as the task ends.
_TASK_EVENT = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] (received|succeeded|raised|retry)")


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``,
    with what ``describe`` says about the state it was left in."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            state = f"; {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{state}")
        time.sleep(interval)


def _admin_connection(server_url: str) -> Any:
    url = make_url(server_url).set(database="postgres")
    params: dict[str, Any] = {"dbname": url.database, "user": url.username or "postgres"}
    if url.password:
        params["password"] = url.password
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    host = url.query.get("host")
    if host:
        params["host"] = host if isinstance(host, str) else host[0]
    connection = psycopg2.connect(**params)
    connection.autocommit = True
    return connection


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``server_url``; its URL."""
    with (
        contextlib.closing(_admin_connection(server_url)) as connection,
        connection.cursor() as cur,
    ):
        suffix = f" TEMPLATE {template}" if template else ""
        cur.execute(f'CREATE DATABASE "{name}"{suffix}')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still in it."""
    with (
        contextlib.closing(_admin_connection(server_url)) as connection,
        connection.cursor() as cur,
    ):
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    """One isolated Switchboard deployment under test."""

    database_url: str
    redis_url: str
    redis_prefix: str
    carrier: SandboxCarrier
    log_dir: Path
    api_port: int = field(default_factory=free_port)
    settings_env: dict[str, str] = field(default_factory=dict)
    # Celery's broker when it is not the Redis above (a RabbitMQ virtual host of its own).
    broker_url: str | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def metrics_dir(self) -> Path:
        """The Prometheus multiprocess directory the API and the workers share."""
        return self.log_dir / "metrics"

    def env(self) -> dict[str, str]:
        """The environment every process of this stack runs with."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            SWITCHBOARD_REDIS_KEY_PREFIX=self.redis_prefix,
            # Development mode: the stack runs on the dev secrets and the sandbox carrier.
            SWITCHBOARD_ENV="dev",
            SWITCHBOARD_PUBLIC_BASE_URL=self.api_url,
            SWITCHBOARD_SANDBOX_URL=self.carrier.base_url,
            SWITCHBOARD_TWILIO_ACCOUNT_SID="",
            SWITCHBOARD_TICK_INTERVAL_S="1",
            # Tests must not depend on the hour they run at; window tests set their own.
            SWITCHBOARD_DEFAULT_CALLING_WINDOW="00:00-24:00",
            # Webhook receivers in tests run on loopback.
            SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS="true",
            # One caller number dials everything here; the pacing test sets its own limits.
            SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER="1000",
            SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT="1000",
            SWITCHBOARD_REDRIVE_AFTER_S="3",
            SWITCHBOARD_DIAL_STALE_AFTER_S="12",
            SWITCHBOARD_LIVE_CALL_CHECK_S="30",
            SWITCHBOARD_PROVIDER_TIMEOUT_S="2",
            SWITCHBOARD_DB_POOL_SIZE="10",
            PYTHONUNBUFFERED="1",
        )
        if self.broker_url is not None:
            env["SWITCHBOARD_BROKER_URL"] = self.broker_url
        env.update(self.settings_env)
        return env

    def metrics_env(self) -> dict[str, str]:
        """The environment of the processes that record metrics (the API and the workers), as
        the dev stack runs them: sharing one multiprocess directory."""
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        return {**self.env(), "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open by the child
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env if env is not None else self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_api(self) -> None:
        """uvicorn on 127.0.0.1, waiting until /healthz answers."""
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
            ],
            env=self.metrics_env(),
        )
        wait_for(self._api_up, 30, what="the API to answer /healthz")

    def _api_up(self) -> bool:
        try:
            return httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(
        self,
        name: str = "worker",
        queues: str = ALL_QUEUES,
        pool: str = "threads",
        concurrency: int = 8,
        loglevel: str = "INFO",
        events: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A real Celery worker process consuming ``queues``; with ``events``, it sends task
        events (``-E``) as workers watched in Flower do."""
        process = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "-Q",
                queues,
                "-P",
                pool,
                "-c",
                str(concurrency),
                "-n",
                f"{name}-{uuid.uuid4().hex[:6]}@%h",
                "--loglevel",
                loglevel,
                "--without-gossip",
                "--without-mingle",
                *(["-E"] if events else []),
            ],
            env=env if env is not None else self.metrics_env(),
        )
        return process

    def start_webhooks_worker(
        self, name: str = "webhooks", concurrency: int = 8
    ) -> subprocess.Popen[bytes]:
        """The worker that sends webhook deliveries, and nothing else."""
        return self.start_worker(name=name, queues=WEBHOOKS_QUEUE, concurrency=concurrency)

    def start_beat(self) -> None:
        """Celery beat with the tick schedule (every second here)."""
        self._spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(self.log_dir / "beat-schedule"),
            ],
        )

    def start_flower(self, port: int, user: str, password: str) -> subprocess.Popen[bytes]:
        """Flower on 127.0.0.1:``port`` with basic auth, on this stack's broker and prefix."""
        return self._spawn(
            "flower",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "flower",
                "--address=127.0.0.1",
                f"--port={port}",
                f"--basic-auth={user}:{password}",
            ],
        )

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
        return set(self.task_events(messaging.TASK_TICK))

    def ticks_since(self, earlier: set[str]) -> int:
        """How many ticks taken after ``earlier`` (a ``tick_ids()``) have run to the end: each
        read the database after whatever happened before ``earlier`` was read."""
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
        """Signal a process's whole group (a worker and its pool children)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL for stragglers."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.processes.clear()

    def client(self, api_key: str) -> httpx.Client:
        """An HTTP client authenticated as a workspace."""
        return httpx.Client(base_url=self.api_url, headers={"x-api-key": api_key}, timeout=60)

    def raw_client(self) -> httpx.Client:
        """An HTTP client without credentials."""
        return httpx.Client(base_url=self.api_url, timeout=60)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query against the stack's database (for recounts and assertions)."""
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
    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session:
            key = create_api_key(session, workspace or f"ws-{uuid.uuid4().hex[:8]}")
            session.commit()
        return key
    finally:
        engine.dispose()


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
) -> Iterator[Stack]:
    """A fresh database from the migrated template, a key prefix, a carrier, API and workers:
    ``workers`` on every queue but webhooks, and (unless ``webhooks_worker`` is false) one
    webhooks worker. A test may start others as it likes (``Stack.start_worker``). Celery's
    broker is the Redis of ``redis_url`` unless ``broker_url`` names another
    (``rabbitmq_vhost``)."""
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
    )
    try:
        stack.start_api()
        for index in range(workers):
            stack.start_worker(name=f"worker{index}", concurrency=concurrency)
        if webhooks_worker:
            stack.start_webhooks_worker()
        if beat:
            stack.start_beat()
        yield stack
    finally:
        stack.stop()
        carrier.stop()
        drop_database(server_url, name)


# The RabbitMQ server the RabbitMQ tests use; each test gets a virtual host of its own on it.
RABBITMQ_URL = os.environ.get("SWITCHBOARD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _rabbitmqctl(*args: str) -> None:
    # A server that does not answer fails the test: it is never skipped.
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of its own on ``RABBITMQ_URL``'s server, created with
    ``rabbitmqctl`` and deleted afterwards (with every queue in it); the broker URL naming it."""
    name = f"sbtest_{uuid.uuid4().hex[:10]}"
    server = urlsplit(RABBITMQ_URL)
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, server.username or "guest", ".*", ".*", ".*")
        yield server._replace(path=f"/{name}").geturl()
    finally:
        _rabbitmqctl("delete_vhost", name)
