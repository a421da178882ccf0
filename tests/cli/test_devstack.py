"""The stack launcher's building blocks (``cli.stack``): embedded servers, the supervisor, the
command lines of the dev and the isolated stack, the deployment files."""

from __future__ import annotations

import io
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cli.stack import (
    ChildDied,
    ProcessSupervisor,
    ServiceUnavailable,
    pid_alive,
    resolve_services,
    start_embedded_postgres,
    start_embedded_redis,
    wait_http,
)

ROOT = Path(__file__).resolve().parents[2]


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- (a) embedded PostgreSQL and Redis -------------------------------------------------------


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The postgres socket lives in the data directory; pytest's tmp paths are short enough.
    return tmp_path_factory.mktemp("stack")


def test_embedded_postgres_and_redis_answer_and_stop(short_tmp: Path) -> None:
    postgres = start_embedded_postgres(short_tmp)
    try:
        broker = start_embedded_redis(short_tmp)
        try:
            assert postgres.url.startswith("postgresql+psycopg2://postgres@/switchboard?host=/")
            socket_dir = postgres.url.split("host=", 1)[1]
            assert len(f"{socket_dir}/.s.PGSQL.5432") < 100
            engine = create_engine(postgres.url, poolclass=NullPool)
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 1")).scalar() == 1
                assert connection.execute(text("SELECT current_database()")).scalar() == (
                    "switchboard"
                )
            engine.dispose()

            assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", broker.url)
            client = redis.Redis.from_url(broker.url)
            assert client.ping() is True
            client.set("switchboard:test", "hello")
            assert client.get("switchboard:test") == b"hello"
            client.close()
        finally:
            broker.stop()
        assert _gone_within(broker.pid, 10), "redis-server still running after stop()"
    finally:
        postgres.stop()
    assert _gone_within(postgres.pid, 15), "postgres still running after stop()"
    postgres.stop()  # idempotent


def test_embedded_postgres_restarts_on_the_same_data(short_tmp: Path) -> None:
    first = start_embedded_postgres(short_tmp)
    try:
        engine = create_engine(first.url, poolclass=NullPool)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE kept (n int)"))
            connection.execute(text("INSERT INTO kept VALUES (42)"))
        engine.dispose()
    finally:
        first.stop()
    assert _gone_within(first.pid, 15)
    second = start_embedded_postgres(short_tmp)
    try:
        engine = create_engine(second.url, poolclass=NullPool)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM kept")).scalar() == 42
        engine.dispose()
    finally:
        second.stop()
    assert _gone_within(second.pid, 15)


def test_resolve_services_refuses_a_configured_database_that_does_not_answer(
    short_tmp: Path,
) -> None:
    environ = {"DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/switchboard"}
    with (
        pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:1/"),
        resolve_services(short_tmp, environ),
    ):
        pytest.fail("resolve_services must not yield")
    # Nothing was started in its place.
    assert not (short_tmp / "pg").exists()
    assert not (short_tmp / "redis").exists()


def test_resolve_services_refuses_a_configured_redis_that_does_not_answer(
    short_tmp: Path,
) -> None:
    with (
        pytest.raises(ServiceUnavailable, match="REDIS_URL"),
        resolve_services(short_tmp, {"REDIS_URL": "redis://127.0.0.1:1/0"}),
    ):
        pytest.fail("resolve_services must not yield")
    assert not (short_tmp / "pg").exists()


def test_resolve_services_uses_configured_redis_and_embeds_postgres(short_tmp: Path) -> None:
    broker = start_embedded_redis(short_tmp / "external")
    try:
        with resolve_services(short_tmp, {"REDIS_URL": broker.url}) as services:
            assert services.redis_url == broker.url
            assert services.embedded == ("postgres",)
            postgres_pid = int((short_tmp / "pg" / "postmaster.pid").read_text().split()[0])
            assert pid_alive(postgres_pid)
        assert _gone_within(postgres_pid, 15)
        # The configured Redis is not ours to stop.
        assert redis.Redis.from_url(broker.url).ping() is True
    finally:
        broker.stop()


# --- (b) deployment files --------------------------------------------------------------------


def _command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_file_has_health_checks_and_valid_dependencies() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "flower", "sandbox"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")

    for name, service in services.items():
        healthcheck = service.get("healthcheck")
        assert healthcheck and healthcheck.get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition == {"condition": "service_healthy"}, (name, dependency)
        for port in service.get("ports", []):
            # Published only on the host's loopback interface.
            assert str(port).startswith("127.0.0.1:"), (name, port)

    def check(name: str) -> str:
        test = services[name]["healthcheck"]["test"]
        return " ".join(test) if isinstance(test, list) else test

    assert "pg_isready" in check("postgres")
    assert "redis-cli" in check("redis") and "ping" in check("redis")
    assert "/healthz" in check("api")
    assert "inspect ping" in check("worker") and "worker.app" in check("worker")
    assert "/healthcheck" in check("flower")

    assert "api.main:app" in _command_text(services["api"])
    for name in ("worker", "beat", "flower"):
        assert "worker.app" in _command_text(services[name]), name
    assert "-Q batch-control,status,dial" in _command_text(services["worker"])
    assert "-E" in _command_text(services["worker"]).split()
    # Webhook deliveries run in a worker of their own, never beside dials.
    assert "-Q webhooks " in _command_text(services["webhooks"])
    assert "inspect ping" in check("webhooks")
    for name in ("api", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert {"postgres", "redis"} <= set(depends) or "api" in depends, name
    for name in ("api", "worker", "beat", "flower"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert environment["REDIS_URL"].startswith("redis://redis:6379")
        # Where Twilio reaches the API and the voice runtime's address come from the
        # environment compose runs in; it refuses to start without them.
        for setting in ("SWITCHBOARD_PUBLIC_BASE_URL", "SWITCHBOARD_VOICE_RUNTIME_URL"):
            assert environment[setting].startswith(f"${{{setting}:?"), (name, setting)
    # The API and the workers share the metrics directory; Flower's metrics stay out of it.
    for name in ("api", "worker", "webhooks"):
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"], name
        assert any(str(v).startswith("metrics:") for v in services[name]["volumes"]), name
    for name in ("flower", "beat", "sandbox"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in services[name]["environment"], name
        assert not services[name].get("volumes"), name
    # Every service the README names, and a RabbitMQ broker only under its profile.
    readme = (ROOT / "README.md").read_text()
    named = re.search(r"`docker-compose\.yml` \(([^)]*)", readme)
    assert named, "the README names docker-compose.yml's services"
    default_services = {name for name, service in services.items() if not service.get("profiles")}
    assert set(re.findall(r"[a-z]+", named[1].split(", with")[0])) == default_services
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]


def _merged(base: dict, override: dict) -> dict:
    """Compose's merge of one service over another: mappings key by key, the rest replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def test_compose_rabbitmq_override_points_every_process_at_it_and_splits_the_workers() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    override = yaml.safe_load((ROOT / "docker-compose.rabbitmq.yml").read_text())["services"]
    app_services = ("api", "worker", "webhooks", "beat", "flower")
    # Without the override the broker is Redis, unless the environment names another.
    for name in app_services:
        broker = compose[name]["environment"]["SWITCHBOARD_BROKER_URL"]
        assert broker == "${SWITCHBOARD_BROKER_URL:-redis://redis:6379/0}", name

    services = {name: _merged(compose.get(name, {}), s) for name, s in override.items()}
    dial = override["worker-dial"]
    assert dial["extends"] == {"file": "docker-compose.yml", "service": "worker"}
    services["worker-dial"] = _merged(compose["worker"], dial)
    assert set(app_services) | {"worker-dial"} == set(services)
    rabbitmq_url = "amqp://switchboard:switchboard@rabbitmq:5672//"
    for name, service in services.items():
        assert service["environment"]["SWITCHBOARD_BROKER_URL"] == rabbitmq_url, name
        assert service["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
    # RabbitMQ has no order across queues: status reports and dials in workers of their own.
    queues = {}
    for name in ("worker", "worker-dial", "webhooks"):
        argv = _command_text(services[name]).split()
        queues[name] = argv[argv.index("-Q") + 1]
        node = argv[argv.index("-n") + 1].split("@")[0]
        assert f"-d {node}@" in " ".join(services[name]["healthcheck"]["test"]), name
    assert queues == {
        "worker": "batch-control,status",
        "worker-dial": "dial",
        "webhooks": "webhooks",
    }
    assert dial["profiles"] == compose["rabbitmq"]["profiles"] == ["rabbitmq"]
    # The URL names the broker's own user; the override's address is the rabbitmq service.
    environment = compose["rabbitmq"]["environment"]
    assert f"{environment['RABBITMQ_DEFAULT_USER']}:{environment['RABBITMQ_DEFAULT_PASS']}@" in (
        rabbitmq_url
    )


def test_procfile_and_dockerfile() -> None:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    assert {"web", "worker", "webhooks", "beat", "flower", "sandbox"} <= set(entries)
    assert "api.main:app" in entries["web"]
    # Webhook deliveries run in a worker of their own, never beside dials.
    for name, queues in (("worker", "batch-control,status,dial"), ("webhooks", "webhooks")):
        argv = shlex.split(entries[name])
        assert argv[argv.index("-Q") + 1] == queues, name
    for name in ("worker", "webhooks", "beat", "flower"):
        argv = shlex.split(entries[name])
        if name == "flower":  # without the metrics directory the API aggregates
            assert argv[:4] == ["exec", "env", "-u", "PROMETHEUS_MULTIPROC_DIR"]
            argv = argv[4:]
        assert argv[:3] == ["celery", "-A", "worker.app"], name
    assert "-m sandbox" in entries["sandbox"]

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert "pip install" in dockerfile


def test_ci_script_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    text_ = script.read_text()
    assert text_.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text_
    assert text_.rstrip().endswith("exec make test")
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"


# --- (c) the process supervisor --------------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


def test_supervisor_stops_the_whole_process_group() -> None:
    console = io.StringIO()
    supervisor = ProcessSupervisor(console=console, stop_timeout=5)
    # The child spawns a grandchild in its group and reports its pid.
    supervisor.start(
        "parent",
        ["sh", "-c", "sleep 300 & echo grandchild=$!; wait"],
    )
    line = supervisor.wait_for_output("parent", r"grandchild=\d+", timeout=10)
    grandchild = int(line.split("=")[1])
    parent = supervisor.pid("parent")
    assert pid_alive(parent) and pid_alive(grandchild)

    supervisor.stop()
    assert _gone_within(parent, 5)
    assert _gone_within(grandchild, 5)
    assert "  parent | grandchild=" in console.getvalue()


def test_supervisor_kills_a_child_that_ignores_sigterm() -> None:
    supervisor = ProcessSupervisor(console=io.StringIO(), stop_timeout=1)
    supervisor.start(
        "stubborn",
        _python(
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(300)\n"
        ),
    )
    supervisor.wait_for_output("stubborn", "ready", timeout=10)
    started = time.monotonic()
    supervisor.stop()
    assert 0.9 <= time.monotonic() - started < 5
    assert not pid_alive(supervisor.pid("stubborn"))


def test_supervisor_reports_a_child_that_dies(tmp_path: Path) -> None:
    with ProcessSupervisor(log_dir=tmp_path, console=io.StringIO()) as supervisor:
        supervisor.start("steady", ["sleep", "300"])
        supervisor.start("crasher", _python("print('boom', flush=True); raise SystemExit(3)"))
        with pytest.raises(ChildDied) as died:
            supervisor.wait(poll_interval=0.05)
        assert died.value.name == "crasher"
        assert died.value.returncode == 3
        assert "boom" in str(died.value)
        steady = supervisor.pid("steady")
    assert _gone_within(steady, 5)
    assert (tmp_path / "crasher.log").read_text() == "boom\n"


def test_supervisor_starts_a_name_again_once_its_child_has_exited(tmp_path: Path) -> None:
    supervisor = ProcessSupervisor(log_dir=tmp_path, console=io.StringIO())
    try:
        supervisor.start("api", _python("print('first', flush=True); raise SystemExit(1)"))
        with pytest.raises(ChildDied):
            supervisor.wait(poll_interval=0.05)
        supervisor.start("api", ["sleep", "300"])
        with pytest.raises(ValueError, match="already running"):
            supervisor.start("api", ["sleep", "300"])
        supervisor.check()  # the child that exited is no longer watched
    finally:
        supervisor.stop()
    # Both wrote to one log, which the supervisor reads back as the child's output.
    assert supervisor.output("api") == ["first"]


def test_wait_http_times_out_on_a_closed_port() -> None:
    from cli.stack import free_port

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer 200"):
        wait_http(f"http://127.0.0.1:{free_port()}/healthz", timeout=0.5)
    assert time.monotonic() - started < 5


# --- the demo's batch watcher ------------------------------------------------------------------


def test_demo_recipients_are_distinct_and_carry_their_variables() -> None:
    from cli.demo import demo_recipients

    recipients = demo_recipients(200)
    numbers = [r["phone_number"] for r in recipients]
    assert len(set(numbers)) == 200
    assert all(re.fullmatch(r"\+1212555\d{4}", n) for n in numbers)
    for recipient in recipients:
        variables = recipient["conversation_initiation_client_data"]["dynamic_variables"]
        assert set(variables) == {"first_name", "amount"}


def test_watch_batch_follows_a_batch_to_its_end_and_summarises_it() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cli.demo import format_summary, watch_batch
    from cli.stack import ApiClient

    polls: list[str | None] = []

    def batch_after(n: int) -> dict:
        done = n >= 2
        statuses = ["completed"] * 3 + ["failed"] if done else ["pending", "dispatched"] * 2
        return {
            "id": "batch_1",
            "name": "demo",
            "status": "completed" if done else "in_progress",
            "total_calls_scheduled": 4,
            "total_calls_dispatched": 4 if done else 2,
            "total_calls_finished": 4 if done else 0,
            "retry_count": 1,
            "recipients": [
                {"status": s, "outcome": ("busy" if s == "failed" else s) if done else None}
                for s in statuses
            ],
        }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            polls.append(self.headers.get("x-api-key"))
            body = json.dumps(batch_after(len(polls) - 1)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ApiClient(f"http://127.0.0.1:{server.server_address[1]}", "key-1")
        out = io.StringIO()  # not a TTY: one line per poll
        batch, finished = watch_batch(
            client, "batch_1", timeout_s=30, out=out, check=lambda: None, started=time.monotonic()
        )
    finally:
        server.shutdown()
        server.server_close()
    assert finished and batch["status"] == "completed"
    assert polls == ["key-1"] * 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "in_progress" in lines[0] and "pending 2 dispatched 2" in lines[0]
    assert "scheduled 4 dispatched 4 finished 4 retries 1" in lines[-1]
    summary = format_summary(batch, 12.5, {"calls_created": 4})
    assert "completed after 12.5 s" in summary
    assert "by status:   completed 3, failed 1" in summary
    assert "by outcome:  completed 3, busy 1" in summary
    assert "4 of 4 recipients reached a final status" in summary


def test_watch_batch_gives_up_at_the_timeout() -> None:
    from cli.demo import watch_batch
    from cli.stack import ApiClient, free_port

    out = io.StringIO()
    started = time.monotonic()
    _batch, finished = watch_batch(
        ApiClient(f"http://127.0.0.1:{free_port()}"),
        "batch_1",
        timeout_s=1.5,
        out=out,
        check=lambda: None,
        started=started,
    )
    assert not finished
    assert 1.5 <= time.monotonic() - started < 5
    assert "poll failed" in out.getvalue()


# --- the stack's workers, per broker ------------------------------------------------------------


def _queues(argv: list[str]) -> str:
    return argv[argv.index("-Q") + 1]


@pytest.mark.parametrize(
    "broker_url", ["amqp://guest:guest@127.0.0.1:5672//", "pyamqp://u:p@rabbit:5672/switchboard"]
)
def test_on_rabbitmq_status_and_dials_run_in_workers_of_their_own(
    broker_url: str, tmp_path: Path
) -> None:
    from cli.stack import StackPorts, stack_commands, worker_node

    ports = StackPorts(api=8000, flower=5555, sandbox=8055)
    commands = stack_commands(ports, tmp_path, "user", "password", broker_url=broker_url)
    workers = {name: argv for name, argv in commands.items() if worker_node(argv) is not None}
    assert {name: _queues(argv) for name, argv in workers.items()} == {
        "worker": "batch-control,status",
        "dial": "dial",
        "webhooks": "webhooks",
    }
    # Every worker has a node name of its own: the stack waits for each one's "ready" line.
    nodes = {name: worker_node(argv) for name, argv in workers.items()}
    assert len(set(nodes.values())) == len(nodes)
    assert "beat" in commands and "flower" in commands


def test_on_redis_one_worker_takes_status_before_dials(tmp_path: Path) -> None:
    from cli.stack import StackPorts, stack_commands, worker_node

    ports = StackPorts(api=8000, flower=5555, sandbox=8055)
    commands = stack_commands(
        ports, tmp_path, "user", "password", broker_url="redis://127.0.0.1:6379/0"
    )
    workers = {name: _queues(argv) for name, argv in commands.items() if worker_node(argv)}
    # Redis's priority order: a status report is taken before any dial waiting beside it.
    assert workers == {"worker": "batch-control,status,dial", "webhooks": "webhooks"}


def test_the_broker_url_the_environment_names_picks_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cli.stack import configured_broker_url
    from shared.settings import Settings

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("SWITCHBOARD_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert configured_broker_url() == "amqp://guest:guest@127.0.0.1:5672//"
    assert Settings().broker_is_rabbitmq
    # Celery's own variable wins, as it does in Settings.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert configured_broker_url() == "redis://127.0.0.1:6379/0"
    assert not Settings().broker_is_rabbitmq


def test_the_isolated_stack_runs_the_dev_stack_command_lines_and_environment(
    tmp_path: Path,
) -> None:
    from cli.stack import Stack, StackPorts, stack_commands
    from cli.stack.commands import child_environment

    commands = stack_commands(
        StackPorts(api=8000, flower=5555, sandbox=8055), tmp_path, "u", "p", broker_url=""
    )
    carrier = type("Carrier", (), {"base_url": "http://127.0.0.1:1"})()
    stack = Stack("postgresql+psycopg2://db", "redis://r", "p:", carrier=carrier, log_dir=tmp_path)
    started: dict[str, list[str]] = {}
    stack.supervisor.start = lambda name, argv, **_: started.setdefault(name, argv)  # type: ignore[method-assign]
    stack.start_worker(name="worker0", events=True)
    stack.start_beat()
    worker, isolated = commands["worker"], started["worker0"]
    # The same worker command line but for the node name, the threads and the test's flags.
    assert isolated[isolated.index("-n") + 1].startswith("worker0-")
    assert set(isolated) - {isolated[isolated.index("-n") + 1], "8"} == (
        set(worker) - {worker[worker.index("-n") + 1], "16"}
    ) | {"--without-gossip", "--without-mingle"}
    assert started["beat"][:-1] == commands["beat"][:-1]
    # One environment builder: the dev stack's with the isolated stack's settings over it.
    env = stack.env()
    dev = child_environment(
        "postgresql+psycopg2://db", "redis://r", api_url=stack.api_url, sandbox_url="x"
    )
    assert env["NO_PROXY"] == dev["NO_PROXY"] and env["SWITCHBOARD_ENV"] == "dev"
    assert env["SWITCHBOARD_REDIS_KEY_PREFIX"] == "p:"
    assert env["SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT"] == "1000"
