"""The demo: one sample batch through the whole stack against the sandbox carrier, watched live."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cli import demo_sip_trunk, demo_vobiz
from cli.run import say
from cli.stack.launcher import STARTUP_ERRORS, DevWorkspace, RunningStack, launch_private_stack
from cli.stack.net import ApiClient, ApiError
from cli.stack.processes import StopRequested, stop_on_signals

# Mixed outcomes with short rings and talks, so 200 calls finish in well under a minute; the
# seed makes two runs of the demo draw the same outcomes.
SANDBOX_CONFIG: dict[str, Any] = {
    "seed": 7,
    "rules": [
        {
            "pattern": "*",
            "outcome": {
                "completed": 0.7,
                "busy": 0.1,
                "no-answer": 0.1,
                "voicemail": 0.05,
                "failed": 0.05,
            },
            "ring_seconds": 0.5,
            "talk_seconds": 2.0,
        }
    ],
    "fetch_twiml": True,
}

BATCH_FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
RECIPIENT_FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "voicemail"})
# Display order: the life of a call, then its endings.
RECIPIENT_STATUSES = (
    "pending",
    "dispatched",
    "initiated",
    "in_progress",
    "completed",
    "voicemail",
    "failed",
    "cancelled",
)
COUNTERS = (
    ("total_calls_scheduled", "scheduled"),
    ("total_calls_dispatched", "dispatched"),
    ("total_calls_finished", "finished"),
    ("retry_count", "retries"),
)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances")


# The providers the demo can dial through (``make demo PROVIDER=...``).
DEMO_PROVIDERS = ("twilio", "sip_trunk", "vobiz")
# What the summary adds for a provider: a line of what reached it, from the carrier's records.
PROVIDER_SUMMARIES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "sip_trunk": demo_sip_trunk.trunk_summary,
    "vobiz": demo_vobiz.vobiz_summary,
}


def write_sandbox_config(path: Path, provider: str = "twilio") -> Path:
    """Write the demo's sandbox carrier configuration to ``path`` and return it."""
    config = dict(SANDBOX_CONFIG)
    if provider == "sip_trunk":
        config["sip_trunks"] = demo_sip_trunk.SANDBOX_TRUNKS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def caller_number_for(client: ApiClient, workspace: DevWorkspace, provider: str) -> str:
    """The id of the dev workspace's caller number of ``provider`` (made the first time)."""
    if provider == "sip_trunk":
        return demo_sip_trunk.trunk_caller_number(client)
    if provider == "vobiz":
        return demo_vobiz.vobiz_caller_number(client)
    return workspace.phone_number_id


def demo_recipients(count: int) -> list[dict[str, Any]]:
    """``count`` recipients +1212555xxxx (fictional 555 numbers), each with its own variables."""
    if not 1 <= count <= 9999:
        raise ValueError("the demo numbers +12125550001..+12125559999 allow 1 to 9999 recipients")
    recipients = []
    for n in range(1, count + 1):
        amount = f"${(n * 37) % 900 + 25}.{(n * 13) % 100:02d}"
        recipients.append(
            {
                "phone_number": f"+1212555{n:04d}",
                "conversation_initiation_client_data": {
                    "dynamic_variables": {
                        "first_name": FIRST_NAMES[n % len(FIRST_NAMES)],
                        "amount": amount,
                    }
                },
            }
        )
    return recipients


def submit_demo_batch(
    client: ApiClient, workspace: DevWorkspace, count: int, phone_number_id: str
) -> dict[str, Any]:
    """Submit the sample batch through the public API from the caller number
    ``phone_number_id`` and return the created batch."""
    body = {
        "call_name": f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "agent_id": workspace.agent_id,
        "agent_phone_number_id": phone_number_id,
        "recipients": demo_recipients(count),
    }
    batch: dict[str, Any] = client.post("/v1/voiceai/batch-calling/submit", body)
    return batch


def recipient_counts(batch: dict[str, Any], key: str) -> Counter[str]:
    """How many of the batch's recipients have each value of ``key`` (status or outcome)."""
    return Counter(str(r.get(key) or "none") for r in batch.get("recipients", []))


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    known = [(status, counts[status]) for status in RECIPIENT_STATUSES if counts[status]]
    others = sorted((k, v) for k, v in counts.items() if k not in RECIPIENT_STATUSES)
    return known + others


def format_progress(batch: dict[str, Any], elapsed: float) -> str:
    """One line: elapsed time, batch status, the four counters and recipients per status."""
    counters = " ".join(f"{label} {batch.get(key, 0)}" for key, label in COUNTERS)
    statuses = " ".join(f"{s} {n}" for s, n in _ordered(recipient_counts(batch, "status")))
    return f"{elapsed:6.1f}s  {batch.get('status', '?'):<11} {counters} | {statuses}"


def format_summary(
    batch: dict[str, Any], elapsed: float, sandbox_stats: dict[str, Any] | None
) -> str:
    """The end-of-demo report: counters, recipients per status and per outcome, elapsed."""
    statuses = recipient_counts(batch, "status")
    outcomes = recipient_counts(batch, "outcome")
    total = sum(statuses.values())
    final = sum(n for s, n in statuses.items() if s in RECIPIENT_FINAL_STATUSES)
    lines = [
        f"Batch {batch.get('id')} ({batch.get('name')}): {batch.get('status')} "
        f"after {elapsed:.1f} s",
        "  counters:    " + ", ".join(f"{label} {batch.get(key, 0)}" for key, label in COUNTERS),
        "  by status:   " + ", ".join(f"{s} {n}" for s, n in _ordered(statuses)),
        "  by outcome:  " + ", ".join(f"{o} {n}" for o, n in outcomes.most_common()),
        f"  final:       {final} of {total} recipients reached a final status",
    ]
    if sandbox_stats is not None:
        lines.append("  sandbox:     " + json.dumps(sandbox_stats, sort_keys=True))
    return "\n".join(lines)


def watch_batch(
    client: ApiClient,
    batch_id: str,
    *,
    timeout_s: float,
    out: TextIO,
    check: Callable[[], None],
    started: float,
) -> tuple[dict[str, Any], bool]:
    """Poll the batch until it reaches a final status or ``timeout_s`` passes, showing progress.

    Returns the last batch seen and whether it finished. ``check`` runs every poll, so a dead
    stack process or a stop signal ends the watch at once.
    """
    tty = out.isatty()
    # A terminal gets one line redrawn in place; a log gets one line per second.
    interval = 0.5 if tty else 1.0
    batch: dict[str, Any] = {"id": batch_id}
    try:
        while True:
            check()
            try:
                batch = client.get(f"/v1/voiceai/batch-calling/{batch_id}")
                line = format_progress(batch, time.monotonic() - started)
            except (ApiError, urllib.error.URLError, OSError) as exc:
                # A slow or restarting API is reported and retried until the deadline.
                line = f"{time.monotonic() - started:6.1f}s  (poll failed: {exc})"
            if tty:
                width = shutil.get_terminal_size().columns
                out.write("\r\x1b[K" + line[: max(width - 1, 20)])
            else:
                out.write(line + "\n")
            out.flush()
            if batch.get("status") in BATCH_FINAL_STATUSES:
                return batch, True
            if time.monotonic() - started >= timeout_s:
                return batch, False
            time.sleep(interval)
    finally:
        if tty:
            out.write("\n")
            out.flush()


def run_demo(
    stack: RunningStack,
    *,
    recipients: int = 200,
    timeout_s: float = 180.0,
    out: TextIO = sys.stdout,
    provider: str = "twilio",
) -> int:
    """Submit the sample batch from a caller number of ``provider``, watch it to the end, print
    a summary; 0 if it completed."""
    client = ApiClient(stack.api_url, stack.workspace.api_key)
    number_id = caller_number_for(client, stack.workspace, provider)
    started = time.monotonic()
    batch = submit_demo_batch(client, stack.workspace, recipients, number_id)
    out.write(
        f"Submitted batch {batch['id']} with {recipients} recipients through {provider} "
        f"(status {batch.get('status')}); watching it, timeout {timeout_s:.0f} s\n"
    )
    out.flush()
    batch, finished = watch_batch(
        client,
        str(batch["id"]),
        timeout_s=timeout_s,
        out=out,
        check=stack.supervisor.check,
        started=started,
    )
    elapsed = time.monotonic() - started
    try:
        sandbox_stats: dict[str, Any] | None = ApiClient(stack.sandbox_url).get("/sandbox/stats")
    except (ApiError, urllib.error.URLError, OSError):
        sandbox_stats = None
    out.write(format_summary(batch, elapsed, sandbox_stats) + "\n")
    summary = PROVIDER_SUMMARIES.get(provider)
    if summary is not None:
        with contextlib.suppress(ApiError, urllib.error.URLError, OSError):
            out.write(summary(ApiClient(stack.sandbox_url).get("/sandbox/calls")) + "\n")
    if not finished:
        out.write(f"The batch did not finish within {timeout_s:.0f} s.\n")
        return 1
    if batch.get("status") != "completed":
        out.write(f"The batch ended as {batch.get('status')}, not completed.\n")
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a private stack on free ports, run the sample batch through it, stop it."""
    temporary = args.state_dir is None
    # A fresh directory under /tmp: its own database, and socket paths stay short.
    state_dir = Path(tempfile.mkdtemp(prefix="sbdemo-")) if temporary else Path(args.state_dir)
    provider = args.provider
    sandbox_config = write_sandbox_config(state_dir / "sandbox.json", provider)
    log_dir = state_dir / "logs"
    stop_event = threading.Event()
    with stop_on_signals(stop_event):
        try:
            with launch_private_stack(
                state_dir,
                "demo",
                sandbox_config=sandbox_config,
                stop_event=stop_event,
                announce=say,
            ) as stack:
                say(f"Stack is up: API {stack.api_url}, Flower {stack.flower_url}")
                say(f"Process logs: {log_dir}")
                code = run_demo(
                    stack, recipients=args.recipients, timeout_s=args.timeout, provider=provider
                )
                say("Stopping the stack")
        except StopRequested:
            say("Demo interrupted; the stack is stopped.")
            code = 130
        except STARTUP_ERRORS as exc:
            print(f"switchboard demo: {exc}", file=sys.stderr)
            code = 1
    if code == 1:
        print(f"Logs of every process are kept in {log_dir}", file=sys.stderr)
    elif temporary:
        shutil.rmtree(state_dir, ignore_errors=True)
    return code
