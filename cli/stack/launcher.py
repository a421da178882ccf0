"""``launch_stack``: the whole dev stack (``switchboard run``, ``make demo``, the status
benchmark): services, migrations, the sandbox carrier, API, workers, beat and Flower under one
supervisor, and the ``dev`` workspace with an agent and a caller number."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.stack.commands import (
    METRICS_PROCESSES,
    StackPorts,
    child_environment,
    fresh_metrics_dir,
    metrics_environment,
    stack_commands,
    worker_node,
)
from cli.stack.dev_secrets import SECRETS_KEY_VARIABLE, dev_secrets_key
from cli.stack.net import (
    LOCALHOST,
    PROJECT_ROOT,
    ApiClient,
    ApiError,
    ServiceUnavailable,
    distinct_free_ports,
    redact_url,
)
from cli.stack.processes import ChildDied, ProcessSupervisor
from cli.stack.services import (
    BROKER_URL_VARIABLES,
    Services,
    check_rabbitmq,
    configured_broker_url,
    rabbitmq_vhost,
    resolve_services,
)

# What starting a stack can fail with, beyond bugs: each carries a message worth showing as is.
STARTUP_ERRORS = (ServiceUnavailable, ChildDied, TimeoutError, ApiError)
DEV_WORKSPACE = "dev"
DEV_CALLER_NUMBER = "+12025550100"
DEV_AGENT: dict[str, Any] = {
    "name": "Switchboard dev agent",
    "prompt": (
        "You are a courteous assistant calling {{first_name}} about an open balance of "
        "<<amount>>. Confirm you are speaking with {{first_name}}, state the amount, offer a "
        "payment plan, and end the call politely if they ask you to."
    ),
    "first_message": "Hi {{first_name}}, this is the Switchboard demo calling.",
    "language": "en",
    "llm": "gpt-4o-mini",
    "voice": {
        "voice_id": "sandbox-voice",
        "stability": 0.5,
        "speed": 1.0,
        "similarity_boost": 0.75,
    },
}


@dataclass(frozen=True)
class DevWorkspace:
    """What a developer needs to call the API of a freshly started stack."""

    api_key: str
    agent_id: str
    phone_number_id: str


@dataclass
class RunningStack:
    """A started dev stack: services, supervised processes and the dev workspace."""

    services: Services
    ports: StackPorts
    supervisor: ProcessSupervisor
    workspace: DevWorkspace
    flower_user: str
    flower_password: str
    state_dir: Path

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        return f"http://{LOCALHOST}:{self.ports.api}"

    @property
    def flower_url(self) -> str:
        """Base URL of Flower."""
        return f"http://{LOCALHOST}:{self.ports.flower}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics of the API and the workers."""
        return f"{self.api_url}/metrics"

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox carrier."""
        return f"http://{LOCALHOST}:{self.ports.sandbox}"


def point_settings_at(services: Services, overrides: Mapping[str, str] | None = None) -> None:
    """Make this process's settings (and engine) use ``services`` plus ``overrides``."""
    from shared import db
    from shared.settings import get_settings

    os.environ["DATABASE_URL"] = services.database_url
    os.environ["REDIS_URL"] = services.redis_url
    os.environ.update(overrides or {})
    get_settings.cache_clear()
    db.reset_engine()


def bootstrap_dev_workspace(api_url: str) -> DevWorkspace:
    """Create a fresh API key for workspace ``dev`` and make sure it has the dev agent and
    caller number, creating them through the HTTP API the first time."""
    from shared.db import transaction
    from shared.workspaces.service import create_api_key

    with transaction() as session:
        api_key = create_api_key(session, DEV_WORKSPACE)
    client = ApiClient(api_url, api_key)
    # Reuse what an earlier start created, so ids in a developer's shell history stay valid.
    agents = client.get("/v1/voiceai/agents?limit=100")["agents"]  # newest first
    agent_id = next((a["agent_id"] for a in agents if a["name"] == DEV_AGENT["name"]), None)
    if agent_id is None:
        agent_id = client.post("/v1/voiceai/agents", DEV_AGENT)["agent_id"]
    numbers = client.get("/v1/voiceai/phone-numbers")
    phone_number_id = next(
        (n["phone_number_id"] for n in numbers if n["phone_number"] == DEV_CALLER_NUMBER), None
    )
    if phone_number_id is None:
        phone_number_id = client.post(
            "/v1/voiceai/phone-numbers",
            {"phone_number": DEV_CALLER_NUMBER, "provider": "twilio", "label": "dev caller"},
        )["phone_number_id"]
    return DevWorkspace(
        api_key=api_key, agent_id=str(agent_id), phone_number_id=str(phone_number_id)
    )


@contextlib.contextmanager
def launch_stack(
    state_dir: Path,
    ports: StackPorts,
    *,
    log_dir: Path | None = None,
    sandbox_config: Path | None = None,
    env_overrides: Mapping[str, str] | None = None,
    stop_event: threading.Event | None = None,
    announce: Callable[[str], None] = print,
) -> Iterator[RunningStack]:
    """Start services, migrate, start every process, wait for health, bootstrap ``dev``;
    stop everything in reverse on exit."""
    from shared.db import migrate
    from shared.settings import get_settings

    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    # Provider connections' secrets: the shell's key, else the state directory's dev key.
    env_overrides = {SECRETS_KEY_VARIABLE: dev_secrets_key(state_dir), **(env_overrides or {})}
    announce("Starting PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set)")
    with resolve_services(state_dir) as services:
        point_settings_at(services, env_overrides)
        announce("Migrating the database")
        migrate(services.database_url)
        settings = get_settings()
        if settings.broker_is_rabbitmq:
            check_rabbitmq(settings.broker_url)
            announce(f"Broker: RabbitMQ at {redact_url(settings.broker_url)}")
        env = child_environment(
            services.database_url,
            services.redis_url,
            api_url=f"http://{LOCALHOST}:{ports.api}",
            sandbox_url=f"http://{LOCALHOST}:{ports.sandbox}",
            overrides=env_overrides,
        )
        metrics_env = metrics_environment(env, fresh_metrics_dir(state_dir))
        commands = stack_commands(
            ports,
            state_dir,
            settings.flower_user,
            settings.flower_password,
            sandbox_config,
            broker_url=settings.broker_url,
        )
        announce("Starting " + ", ".join(commands))
        with ProcessSupervisor(log_dir=log_dir, stop_event=stop_event) as supervisor:
            for name, argv in commands.items():
                process_env = metrics_env if name in METRICS_PROCESSES else env
                supervisor.start(name, argv, env=process_env, cwd=PROJECT_ROOT)
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.sandbox}/sandbox/stats")
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.api}/readyz")
            # Celery logs "<hostname> ready." once the consumer is connected and consuming.
            for name, argv in commands.items():
                node = worker_node(argv)
                if node is not None:
                    supervisor.wait_for_output(name, rf"{re.escape(node)}@\S+ ready\.")
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.flower}/healthcheck")
            workspace = bootstrap_dev_workspace(f"http://{LOCALHOST}:{ports.api}")
            supervisor.check()
            yield RunningStack(
                services=services,
                ports=ports,
                supervisor=supervisor,
                workspace=workspace,
                flower_user=settings.flower_user,
                flower_password=settings.flower_password,
                state_dir=state_dir,
            )


@contextlib.contextmanager
def launch_private_stack(
    state_dir: Path,
    name: str,
    *,
    sandbox_config: Path,
    broker_url: str | None = None,
    stop_event: threading.Event | None = None,
    announce: Callable[[str], None] = print,
) -> Iterator[RunningStack]:
    """``launch_stack`` on free ports, with its logs in ``state_dir/logs``, kept apart from any
    other stack on the same servers: a Redis key prefix and, on RabbitMQ (``broker_url``, else
    the one the environment names), a virtual host of its own, both ``switchboard-NAME-...``.
    It always dials the sandbox, whatever Twilio credentials the shell holds."""
    from shared.settings import is_rabbitmq_url

    api, flower, sandbox = distinct_free_ports(3)
    overrides = {
        "SWITCHBOARD_PUBLIC_BASE_URL": f"http://{LOCALHOST}:{api}",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID": "",
        "SWITCHBOARD_TWILIO_AUTH_TOKEN": "",
        "SWITCHBOARD_REDIS_KEY_PREFIX": f"switchboard-{name}-{uuid.uuid4().hex[:8]}:",
    }
    broker_url = broker_url or configured_broker_url()
    with contextlib.ExitStack() as broker:
        if broker_url is not None and is_rabbitmq_url(broker_url):
            # RabbitMQ's queues carry no prefix: a virtual host of its own keeps them apart.
            private_url = broker.enter_context(
                rabbitmq_vhost(broker_url, f"switchboard-{name}-", announce=announce)
            )
            overrides.update(dict.fromkeys(BROKER_URL_VARIABLES, private_url))
        with launch_stack(
            state_dir,
            StackPorts(api=api, flower=flower, sandbox=sandbox),
            log_dir=state_dir / "logs",
            sandbox_config=sandbox_config,
            env_overrides=overrides,
            stop_event=stop_event,
            announce=announce,
        ) as stack:
            yield stack
