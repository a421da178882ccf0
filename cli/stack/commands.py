"""The command line and the environment of every stack process: the API, the Celery workers,
beat, Flower and the sandbox carrier. ``switchboard run``, the demo, the tests and the
benchmarks all start their processes from these."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cli.stack.net import LOCALHOST

# The queues the dev worker consumes; production scales workers per queue instead. Webhook
# deliveries run in a worker of their own, so a slow receiver never takes a dial's thread.
WORKER_QUEUES = "batch-control,status,dial"
WEBHOOKS_WORKER_QUEUES = "webhooks"
# On Redis one worker takes the next message from the first of its queues that has one, so a
# status report never waits behind dials. RabbitMQ has no order across queues: there, status
# reports (with batch control) get a worker of their own and dials another
# (docs/ARCHITECTURE.md, "Status reports and dials on RabbitMQ").
STATUS_WORKER_QUEUES = "batch-control,status"
DIAL_WORKER_QUEUES = "dial"
# The processes that share the Prometheus multiprocess directory (see shared/metrics.py):
# the API and the workers. Beat records no metrics, and Flower's own must stay out of it.
METRICS_PROCESSES = ("api", "worker", "dial", "webhooks")


@dataclass(frozen=True)
class StackPorts:
    """The TCP ports of the processes the dev stack serves on 127.0.0.1."""

    api: int
    flower: int
    sandbox: int


_PYTHON = sys.executable
_CELERY = [_PYTHON, "-m", "celery", "-A", "worker.app"]


def api_command(port: int, log_level: str = "info") -> list[str]:
    """uvicorn serving the API on 127.0.0.1:``port``."""
    return [
        _PYTHON, "-m", "uvicorn", "api.main:app",
        "--host", LOCALHOST, "--port", str(port), "--log-level", log_level,
    ]  # fmt: skip


def worker_command(
    queues: str,
    node: str,
    *,
    pool: str = "threads",
    concurrency: int = 16,
    events: bool = True,
    loglevel: str = "INFO",
    gossip: bool = True,
    beat_schedule: Path | None = None,
) -> list[str]:
    """A Celery worker consuming ``queues`` as node ``node@<host>``; with ``events`` it sends
    task events (``-E``) as workers watched in Flower do; without ``gossip`` it neither gossips
    nor waits for other nodes at startup (a test's short-lived workers); with
    ``beat_schedule`` it runs beat too (``-B``, a child of the worker), keeping its schedule
    there."""
    argv = [
        *_CELERY, "worker", "-Q", queues, "-P", pool, "-c", str(concurrency),
        "--loglevel", loglevel, "-n", f"{node}@%h",
    ]  # fmt: skip
    if events:
        argv.append("-E")
    if not gossip:
        argv += ["--without-gossip", "--without-mingle"]
    if beat_schedule is not None:
        argv += ["-B", "-s", str(beat_schedule)]
    return argv


def unique_node(name: str) -> str:
    """A worker node name that no other worker on this machine has: ``name-xxxxxx``."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


def beat_command(schedule: Path) -> list[str]:
    """Celery beat, keeping its schedule in ``schedule``."""
    return [*_CELERY, "beat", "--loglevel", "INFO", "-s", str(schedule)]


def flower_command(port: int, user: str, password: str) -> list[str]:
    """Flower on 127.0.0.1:``port`` with basic auth."""
    return [
        *_CELERY, "flower", f"--address={LOCALHOST}", f"--port={port}",
        f"--basic-auth={user}:{password}",
    ]  # fmt: skip


def sandbox_command(port: int, config: Path | None = None) -> list[str]:
    """The sandbox carrier on 127.0.0.1:``port``, with the outcome rules of ``config``."""
    argv = [_PYTHON, "-m", "sandbox", "--host", LOCALHOST, "--port", str(port)]
    return [*argv, "--config", str(config)] if config is not None else argv


def worker_processes(broker_url: str) -> dict[str, list[str]]:
    """The Celery workers of the dev stack, by process name: on Redis one for batch control,
    status and dials; on RabbitMQ one for batch control and status and one for dials; and the
    webhooks worker either way."""
    from shared.settings import is_rabbitmq_url

    if is_rabbitmq_url(broker_url):
        workers = {
            "worker": worker_command(STATUS_WORKER_QUEUES, "status1"),
            "dial": worker_command(DIAL_WORKER_QUEUES, "dial1"),
        }
    else:
        workers = {"worker": worker_command(WORKER_QUEUES, "worker1")}
    workers["webhooks"] = worker_command(WEBHOOKS_WORKER_QUEUES, "webhooks1")
    return workers


def worker_node(argv: Sequence[str]) -> str | None:
    """The node name prefix (``-n NAME@%h``) of a Celery worker command line, else None."""
    if "worker" not in argv or "-n" not in argv:
        return None
    return argv[list(argv).index("-n") + 1].split("@", 1)[0]


def stack_commands(
    ports: StackPorts,
    state_dir: Path,
    flower_user: str,
    flower_password: str,
    sandbox_config: Path | None = None,
    *,
    broker_url: str = "",
) -> dict[str, list[str]]:
    """The command line of every dev stack process, by name, in start order; with a RabbitMQ
    ``broker_url``, dials run in a worker of their own (``worker_processes``)."""
    return {
        "sandbox": sandbox_command(ports.sandbox, sandbox_config),
        "api": api_command(ports.api),
        **worker_processes(broker_url),
        "beat": beat_command(state_dir / "celerybeat-schedule"),
        "flower": flower_command(ports.flower, flower_user, flower_password),
    }


# What the dev stack sets unless the shell already does. The sandbox calls back to the API:
# a public URL the developer set (a tunnel) is kept. The dev stack dials only the sandbox
# carrier, so the recipient-local 08:00-21:00 default would only make the demo stall at night,
# and the carrier, our own, takes any pace: 50 calls a second, as an account that bought them
# would, rather than Twilio's default of 1.
DEV_DEFAULTS = {
    "SWITCHBOARD_DEFAULT_CALLING_WINDOW": "00:00-24:00",
    "SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS": "true",
    "SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT": "50",
}


def child_environment(
    database_url: str,
    redis_url: str,
    *,
    api_url: str,
    sandbox_url: str,
    defaults: Mapping[str, str] = DEV_DEFAULTS,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every stack process: ours, pointed at the services, the API and the
    sandbox carrier, in development mode (its dev secrets are accepted, whatever the shell
    says); ``defaults`` where the shell sets nothing, then ``overrides`` over everything."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SWITCHBOARD_SANDBOX_URL=sandbox_url,
        SWITCHBOARD_ENV="dev",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("SWITCHBOARD_PUBLIC_BASE_URL", api_url)
    for name, value in defaults.items():
        env.setdefault(name, value)
    # Every hop of the stack is local: keep proxies configured in the shell out of it.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    # A metrics directory is the launcher's to give (``metrics_environment``), not the shell's.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(overrides or {})
    return env


def metrics_environment(env: Mapping[str, str], metrics_dir: Path) -> dict[str, str]:
    """``env`` for a process of ``METRICS_PROCESSES``: writing to ``metrics_dir``, which the
    API's /metrics serves."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def fresh_metrics_dir(state_dir: Path) -> Path:
    """``state_dir/metrics``, emptied: the Prometheus multiprocess directory of one stack run.

    Emptied before any process starts (a process already writing there would keep writing to
    deleted files), so counters start from zero with the stack.
    """
    metrics_dir = state_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for sample_file in metrics_dir.glob("*.db"):
        sample_file.unlink()
    return metrics_dir
