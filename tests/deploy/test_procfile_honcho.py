"""The Procfile as its header says to run it: honcho, a .env file, servers already running.

Every line starts, web migrates a fresh database before it serves, a batch dialed through the
sandbox carrier completes, and honcho stops every process at once on Ctrl-C (SIGINT).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.factories import create_agent, recipients, register_number, submit
from tests.support import (
    ROOT,
    create_database,
    drop_database,
    free_port,
    rabbitmq_vhost,
    wait_for,
)

BIN = Path(sys.executable).parent
PROCFILE_LINES = ("web", "worker", "webhooks", "beat", "flower", "sandbox")
# Procfile.rabbitmq: the same lines, but dials in a worker of their own.
RABBITMQ_LINES = (*PROCFILE_LINES, "dial")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def fresh_database(service_urls: tuple[str, str]) -> Iterator[str]:
    """An empty database (web's migration builds its schema), as a bare postgresql:// URL:
    what a hosting platform hands out, which Switchboard gives its own driver."""
    server_url, _ = service_urls
    name = f"sbtest_procfile_{uuid.uuid4().hex[:8]}"
    url = make_url(create_database(server_url, name)).set(drivername="postgresql")
    yield url.render_as_string(hide_password=False)
    drop_database(server_url, name)


@pytest.fixture(params=["Procfile", "Procfile.rabbitmq"])
def procfile(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """A Procfile, and the .env settings of its broker: Redis, or a RabbitMQ virtual host."""
    if request.param == "Procfile":
        yield request.param, {}
        return
    with rabbitmq_vhost() as url:
        yield request.param, {"SWITCHBOARD_BROKER_URL": url}


def test_honcho_runs_the_procfile_a_batch_completes_and_ctrl_c_stops_it(
    procfile: tuple[str, dict[str, str]],
    fresh_database: str,
    service_urls: tuple[str, str],
    tmp_path: Path,
) -> None:
    _, redis_url = service_urls
    name_of_procfile, broker_settings = procfile
    lines = PROCFILE_LINES if name_of_procfile == "Procfile" else RABBITMQ_LINES
    workers = [name for name in lines if name in ("worker", "webhooks", "dial")]
    port, flower_port, sandbox_port = free_port(), free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # What a developer puts in .env: honcho gives it to every line of the Procfile.
    settings = {
        "DATABASE_URL": fresh_database,
        "REDIS_URL": redis_url,
        "SWITCHBOARD_REDIS_KEY_PREFIX": f"sbtest-procfile-{uuid.uuid4().hex[:8]}:",
        "SWITCHBOARD_ENV": "dev",
        "SWITCHBOARD_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID": "",
        "SWITCHBOARD_DEFAULT_CALLING_WINDOW": "00:00-24:00",
        "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": "1000",
        "SWITCHBOARD_TICK_INTERVAL_S": "1",
        "SWITCHBOARD_FLOWER_USER": "flower",
        "SWITCHBOARD_FLOWER_PASSWORD": "flower-password",
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "SANDBOX_PORT": str(sandbox_port),
        "BEAT_SCHEDULE": str(tmp_path / "celerybeat-schedule"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONUNBUFFERED": "1",
        **broker_settings,
    }
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    # The shell's own settings stay out: only .env configures the processes.
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SWITCHBOARD_", "PROMETHEUS_")) and name not in settings
    }
    # The venv's commands on PATH, as `. .venv/bin/activate` puts them.
    environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(ROOT / name_of_procfile), "-e", str(env_file), "start"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output() -> str:
        return log_path.read_text(errors="replace")

    def describe() -> str:
        return "honcho's output:\n" + output()[-6000:]

    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)
    processes: set[int] = set()
    try:

        def ready() -> bool:
            assert honcho.poll() is None, f"honcho exited early; {describe()}"
            text = output()
            return all(f"{name}1@" in text and "ready." in text for name in workers)

        wait_for(ready, 60, what="the workers to be ready", describe=describe)
        # web answers once its migration has built the schema: nothing else migrated it.
        wait_for(
            lambda: _answers(api, "/readyz"), 60, what="the API to be ready", describe=describe
        )
        assert "is at the newest migration" in output()

        created = subprocess.run(
            [str(BIN / "switchboard"), "api-key", "create", "--workspace", "procfile"],
            env={**environ, **settings},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        api.headers["x-api-key"] = created.stdout.strip()
        agent_id = create_agent(api)
        number_id = register_number(api)
        response = submit(api, agent_id, number_id, recipients(3, prefix="+1312555"))
        assert response.status_code == 200, response.text
        batch_id = response.json()["id"]

        def completed() -> bool:
            batch = api.get(f"/v1/voiceai/batch-calling/{batch_id}").json()
            return batch["status"] == "completed" and batch["total_calls_finished"] == 3

        wait_for(completed, 60, what="the batch to complete", describe=describe)
        # The workers' samples reach the API's /metrics; Flower's own never do.
        metrics = api.get("/metrics").text
        assert "switchboard_dial_seconds" in metrics
        assert "flower_" not in metrics
        # Every line of the Procfile is still running: none was a one-shot process.
        assert honcho.poll() is None, describe()
        for name in lines:
            assert f"{name}.1 " in output(), (name, describe())
        assert "exited with code" not in output(), describe()

        processes = _descendants(honcho.pid)
        honcho.send_signal(signal.SIGINT)  # Ctrl-C
        assert honcho.wait(30) == 130, describe()
        # Every process stopped on its own within honcho's grace period: none needed SIGKILL.
        assert "SIGKILL" not in output(), describe()
        wait_for(
            lambda: not [pid for pid in processes if _alive(pid)],
            10,
            what="every process of the Procfile to exit",
            describe=describe,
        )
    finally:
        api.close()
        if honcho.poll() is None:
            honcho.kill()
            honcho.wait()
        for pid in processes | _descendants(honcho.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_procfile_has_no_one_shot_line_and_web_migrates_before_serving() -> None:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            lines[name.strip()] = command.strip()
    assert set(lines) == set(PROCFILE_LINES)
    migrate, serve = lines["web"].split(" && ")
    assert migrate == "switchboard migrate"
    assert serve.startswith("exec uvicorn api.main:app ")
    # Flower's Prometheus metrics stay out of the directory the API aggregates.
    assert "env -u PROMETHEUS_MULTIPROC_DIR celery" in lines["flower"]


def test_the_rabbitmq_procfile_differs_only_in_its_split_workers() -> None:
    def entries(name: str) -> dict[str, str]:
        found = {}
        for line in (ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, command = line.split(":", 1)
                found[key.strip()] = command.strip()
        return found

    redis, rabbitmq = entries("Procfile"), entries("Procfile.rabbitmq")
    assert set(rabbitmq) == set(RABBITMQ_LINES)
    assert {k: v for k, v in rabbitmq.items() if k not in ("worker", "dial")} == {
        k: v for k, v in redis.items() if k != "worker"
    }
    assert "-Q batch-control,status " in rabbitmq["worker"]
    assert rabbitmq["dial"] == redis["worker"].replace(
        "-Q batch-control,status,dial", "-Q dial"
    ).replace("-n worker1@", "-n dial1@")
