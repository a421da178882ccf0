"""The ``switchboard`` command: API keys, migrations, the local dev stack, the demo, and batch
commands (submit a CSV, watch, list, export) that talk to the HTTP API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from cli.batches import CommandFailed, add_batch_commands
from cli.devstack import (
    BROKER_URL_VARIABLES,
    LOCALHOST,
    PROJECT_ROOT,
    ApiError,
    ChildDied,
    RunningStack,
    ServiceUnavailable,
    StackPorts,
    StopRequested,
    check_database,
    configured_broker_url,
    free_port,
    launch_stack,
    port_in_use,
    private_rabbitmq_vhost,
    redact_url,
    running_dev_database_url,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Where the database is, as Settings reads it (the bare name wins).
DATABASE_URL_VARIABLES = ("DATABASE_URL", "SWITCHBOARD_DATABASE_URL")
# What startup can fail with, beyond bugs: each carries a message worth showing as it is.
STARTUP_ERRORS = (ServiceUnavailable, ChildDied, TimeoutError, ApiError)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """While active, SIGINT/SIGTERM/SIGHUP set ``stop_event`` instead of killing the process."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # Only set the flag: raising here could interrupt a shutdown already under way, and
        # the shutdown is bounded (SIGKILL after the grace period), so repeats are ignored.
        if not stop_event.is_set():
            print(
                f"\n{signal.Signals(signum).name} received; stopping", file=sys.stderr, flush=True
            )
        stop_event.set()

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------
# api-key, migrate


def _dev_state_dirs() -> list[Path]:
    # Where `switchboard run` keeps its state: its --state-dir default, from here and from the
    # project's root (what `make run` uses).
    configured = os.environ.get("SWITCHBOARD_STATE_DIR", "").strip()
    if configured:
        return [Path(configured)]
    return [Path(".devstack"), PROJECT_ROOT / ".devstack"]


def use_running_dev_database() -> str | None:
    """With neither DATABASE_URL nor SWITCHBOARD_DATABASE_URL set, point this process's
    settings at the database of a running dev stack, if there is one; its URL, or None."""
    from shared import db
    from shared.settings import get_settings

    if any(os.environ.get(name, "").strip() for name in DATABASE_URL_VARIABLES):
        return None
    for state_dir in _dev_state_dirs():
        url = running_dev_database_url(state_dir)
        if url is not None:
            os.environ["DATABASE_URL"] = url
            get_settings.cache_clear()
            db.reset_engine()
            return url
    return None


def cmd_api_key_create(args: argparse.Namespace) -> int:
    """Create an API key for a workspace (created if missing) and print it once; without
    DATABASE_URL, in the database of the dev stack running here, if one is."""
    from shared.db import transaction
    from shared.services.workspaces import create_api_key
    from shared.settings import get_settings

    dev_database = use_running_dev_database()
    if dev_database is not None:
        print(f"Using the running dev stack's database, {dev_database}", file=sys.stderr)
    check_database(get_settings().database_url)
    with transaction() as session:
        key = create_api_key(session, args.workspace)
    print(key)
    print(
        f"API key for workspace '{args.workspace}'; it is stored hashed and cannot be shown again.",
        file=sys.stderr,
    )
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Bring the database at DATABASE_URL to the newest migration."""
    from shared.db import migrate
    from shared.settings import get_settings

    url = get_settings().database_url
    check_database(url)
    migrate(url)
    print(f"{redact_url(url)} is at the newest migration", file=sys.stderr)
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    """Check a going-live configuration and print every problem; 1 when there is one."""
    from cli.devstack import check_redis
    from shared.errors import ProviderError
    from shared.settings import get_settings
    from shared.telephony.twilio import TwilioProvider, account_for

    settings = get_settings()
    problems = settings.going_live_problems()
    for check, url in ((check_database, settings.database_url), (check_redis, settings.redis_url)):
        try:
            check(url)
        except ServiceUnavailable as exc:
            problems.append(str(exc))
    if settings.twilio_account_sid.strip() and settings.twilio_auth_token.strip():
        try:
            TwilioProvider(account_for(settings), settings).check_account()
        except ProviderError as exc:
            problems.append(f"Twilio did not accept the account's credentials: {exc.message}")
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print("ready to go live: settings, database, broker and Twilio account check out")
    # Twilio queues calls above the account's calls per second rather than refusing them, so
    # a pace above what the account bought only delays calls at Twilio (past calling hours).
    print(
        f"pacing: at most {settings.calls_per_second_per_account:g} calls per second for the "
        "Twilio account (SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT; Twilio's default is 1: set "
        "it to the calls per second the account has bought)"
    )
    return 0


# --------------------------------------------------------------------------------------------
# run


def _curl_example(stack: RunningStack) -> str:
    body = {
        "call_name": "hello",
        "agent_id": stack.workspace.agent_id,
        "agent_phone_number_id": stack.workspace.phone_number_id,
        "recipients": [
            {
                "phone_number": "+12125550001",
                "conversation_initiation_client_data": {
                    "dynamic_variables": {"first_name": "Ada", "amount": "$42.00"}
                },
            }
        ],
    }
    return (
        f"curl -sS -X POST {stack.api_url}/v1/voiceai/batch-calling/submit \\\n"
        f"    -H 'content-type: application/json' "
        f"-H {shlex.quote('x-api-key: ' + stack.workspace.api_key)} \\\n"
        f"    -d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
    )


def stack_banner(stack: RunningStack) -> str:
    """What a developer needs from a started stack: URLs, credentials, ids, a first request."""
    services = stack.services
    embedded = set(services.embedded)
    db_note = " (embedded)" if "postgres" in embedded else ""
    redis_note = " (embedded)" if "redis" in embedded else ""
    return "\n".join(
        [
            "",
            "Switchboard is running.",
            f"  API              {stack.api_url}",
            f"  API docs         {stack.api_url}/docs",
            f"  Metrics          {stack.metrics_url}  (Prometheus; API and workers)",
            f"  Flower           {stack.flower_url}  "
            f"(user {stack.flower_user}, password {stack.flower_password})",
            f"  Sandbox carrier  {stack.sandbox_url}  (counters at /sandbox/stats)",
            f"  Database         {redact_url(services.database_url)}{db_note}",
            f"  Redis            {redact_url(services.redis_url)}{redis_note}",
            "",
            f"  API key          {stack.workspace.api_key}  (workspace dev; a new key each start)",
            f"  Agent id         {stack.workspace.agent_id}",
            f"  Phone number id  {stack.workspace.phone_number_id}",
            "",
            "Submit a batch:",
            "  " + _curl_example(stack),
            "",
            "Watch it:",
            f"  curl -sS -H {shlex.quote('x-api-key: ' + stack.workspace.api_key)} "
            f"{stack.api_url}/v1/voiceai/batch-calling/BATCH_ID",
            "",
            # The embedded database is found from the state directory; another needs its URL.
            "More keys: "
            + (
                ""
                if "postgres" in embedded
                else f"DATABASE_URL={shlex.quote(services.database_url)} "
            )
            + ".venv/bin/switchboard api-key create --workspace NAME",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


def _busy_ports(ports: StackPorts) -> list[str]:
    named = {
        "--api-port": ports.api,
        "--flower-port": ports.flower,
        "--sandbox-port": ports.sandbox,
    }
    return [f"{flag} {port}" for flag, port in named.items() if port_in_use(port)]


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole stack in the foreground until SIGINT/SIGTERM."""
    ports = StackPorts(api=args.api_port, flower=args.flower_port, sandbox=args.sandbox_port)
    busy = _busy_ports(ports)
    if busy:
        print(
            f"switchboard run: already in use on {LOCALHOST}: {', '.join(busy)}; "
            "pick other ports with those flags (or SWITCHBOARD_API_PORT, SWITCHBOARD_FLOWER_PORT, "
            "SWITCHBOARD_SANDBOX_PORT)",
            file=sys.stderr,
        )
        return 1
    stop_event = threading.Event()
    with stop_on_signals(stop_event):
        try:
            with launch_stack(
                Path(args.state_dir),
                ports,
                sandbox_config=Path(args.sandbox_config) if args.sandbox_config else None,
                stop_event=stop_event,
                announce=_say,
            ) as stack:
                stack.supervisor.print(stack_banner(stack))
                stack.supervisor.wait()
        except StopRequested:
            _say("Stopped.")
            return 0
        except STARTUP_ERRORS as exc:
            print(f"switchboard run: {exc}", file=sys.stderr)
            return 1
    return 0  # pragma: no cover - wait() only returns by raising


# --------------------------------------------------------------------------------------------
# demo


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a private stack on free ports, run the sample batch through it, stop it."""
    from cli.demo import run_demo, write_sandbox_config
    from shared.settings import is_rabbitmq_url

    temporary = args.state_dir is None
    # A fresh directory under /tmp: its own database, and socket paths stay short.
    state_dir = Path(tempfile.mkdtemp(prefix="sbdemo-")) if temporary else Path(args.state_dir)
    api, flower, sandbox = _distinct_free_ports(3)
    ports = StackPorts(api=api, flower=flower, sandbox=sandbox)
    overrides = {
        "SWITCHBOARD_PUBLIC_BASE_URL": f"http://{LOCALHOST}:{api}",
        # The demo always dials the sandbox, whatever Twilio credentials the shell holds.
        "SWITCHBOARD_TWILIO_ACCOUNT_SID": "",
        "SWITCHBOARD_TWILIO_AUTH_TOKEN": "",
        # With a shared REDIS_URL, a private key prefix keeps the demo's queues apart.
        "SWITCHBOARD_REDIS_KEY_PREFIX": f"switchboard-demo-{uuid.uuid4().hex[:8]}:",
    }
    sandbox_config = write_sandbox_config(state_dir / "sandbox.json")
    log_dir = state_dir / "logs"
    stop_event = threading.Event()
    code = 1
    broker_url = configured_broker_url()
    with stop_on_signals(stop_event), contextlib.ExitStack() as broker:
        if broker_url is not None and is_rabbitmq_url(broker_url):
            # RabbitMQ's queues carry no prefix: a virtual host of its own keeps the demo's
            # apart from another stack's on the same server.
            private_url = broker.enter_context(
                private_rabbitmq_vhost(broker_url, "switchboard-demo-", announce=_say)
            )
            overrides.update(dict.fromkeys(BROKER_URL_VARIABLES, private_url))
        try:
            with launch_stack(
                state_dir,
                ports,
                log_dir=log_dir,
                sandbox_config=sandbox_config,
                env_overrides=overrides,
                stop_event=stop_event,
                announce=_say,
            ) as stack:
                _say(f"Stack is up: API {stack.api_url}, Flower {stack.flower_url}")
                _say(f"Process logs: {log_dir}")
                code = run_demo(stack, recipients=args.recipients, timeout_s=args.timeout)
                _say("Stopping the stack")
        except StopRequested:
            _say("Demo interrupted; the stack is stopped.")
            code = 130
        except STARTUP_ERRORS as exc:
            print(f"switchboard demo: {exc}", file=sys.stderr)
            code = 1
    if code == 1:
        print(f"Logs of every process are kept in {log_dir}", file=sys.stderr)
    elif temporary:
        shutil.rmtree(state_dir, ignore_errors=True)
    return code


# --------------------------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    """The ``switchboard`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: API keys, migrations, the local dev stack, the demo, and "
        "batches from CSV files (submit, watch, batches, export) over the HTTP API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api_key = commands.add_parser(
        "api-key",
        help="manage API keys (uses DATABASE_URL, else a running dev stack's database)",
    )
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    create = api_key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--workspace", required=True, help="workspace name (created if missing)")
    create.set_defaults(handler=cmd_api_key_create)

    migrate = commands.add_parser("migrate", help="upgrade the database at DATABASE_URL to head")
    migrate.set_defaults(handler=cmd_migrate)

    doctor = commands.add_parser(
        "doctor",
        help="check the settings, database, broker and Twilio account for going live",
    )
    doctor.set_defaults(handler=cmd_doctor)

    run = commands.add_parser(
        "run",
        help="run API, workers (dial, webhooks), beat, Flower and the sandbox in the foreground",
        description="Uses DATABASE_URL / REDIS_URL when set, else embedded PostgreSQL and Redis.",
    )
    run.add_argument("--api-port", type=int, default=_env_int("SWITCHBOARD_API_PORT", 8000))
    run.add_argument("--flower-port", type=int, default=_env_int("SWITCHBOARD_FLOWER_PORT", 5555))
    run.add_argument("--sandbox-port", type=int, default=_env_int("SWITCHBOARD_SANDBOX_PORT", 8055))
    run.add_argument(
        "--state-dir",
        default=os.environ.get("SWITCHBOARD_STATE_DIR", ".devstack"),
        help="where embedded servers keep their data and beat its schedule",
    )
    run.add_argument(
        "--sandbox-config",
        default=os.environ.get("SWITCHBOARD_SANDBOX_CONFIG") or None,
        help="JSON file with the sandbox carrier's outcome rules",
    )
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo", help="run a sample batch of calls through a private stack, then stop it"
    )
    demo.add_argument("--recipients", type=int, default=200)
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the batch")
    demo.add_argument(
        "--state-dir", default=None, help="keep state here (default: a temporary directory)"
    )
    demo.set_defaults(handler=cmd_demo)

    add_batch_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``switchboard`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ServiceUnavailable, CommandFailed) as exc:
        print(f"switchboard {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
