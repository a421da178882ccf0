"""``switchboard run``: the whole dev stack in the foreground until SIGINT/SIGTERM, with a
banner of its URLs, credentials and a first request."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
from pathlib import Path

from cli.stack.commands import StackPorts
from cli.stack.launcher import STARTUP_ERRORS, RunningStack, launch_stack
from cli.stack.net import LOCALHOST, port_in_use, redact_url
from cli.stack.processes import StopRequested, stop_on_signals


def say(text: str) -> None:
    """Print ``text`` at once (the stack's processes print beside it)."""
    print(text, flush=True)


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
                announce=say,
            ) as stack:
                stack.supervisor.print(stack_banner(stack))
                stack.supervisor.wait()
        except StopRequested:
            say("Stopped.")
            return 0
        except STARTUP_ERRORS as exc:
            print(f"switchboard run: {exc}", file=sys.stderr)
            return 1
    return 0  # pragma: no cover - wait() only returns by raising
