"""The batch commands of ``switchboard``: submit a CSV, watch, list, export (over the HTTP API)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.demo import (
    BATCH_FINAL_STATUSES,
    COUNTERS,
    RECIPIENT_FINAL_STATUSES,
    format_progress,
    format_summary,
    recipient_counts,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
BATCHES = "/v1/voiceai/batch-calling"
POLL_INTERVAL_S = 1.0


class CommandFailed(Exception):
    """A batch command cannot go on; the message says why, for stderr."""


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """``--api`` and ``--api-key``, defaulting to SWITCHBOARD_API_URL / SWITCHBOARD_API_KEY."""
    parser.add_argument(
        "--api",
        default=os.environ.get("SWITCHBOARD_API_URL") or DEFAULT_API_URL,
        help=f"API base URL (env SWITCHBOARD_API_URL, default {DEFAULT_API_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SWITCHBOARD_API_KEY") or None,
        help="workspace API key (env SWITCHBOARD_API_KEY)",
    )


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.api_key:
        raise CommandFailed("no API key: pass --api-key or set SWITCHBOARD_API_KEY")
    return httpx.Client(
        base_url=args.api.rstrip("/"), headers={"x-api-key": args.api_key}, timeout=120
    )


def describe_error(error: dict[str, Any]) -> str:
    """One API error item as a line; errors about a CSV row read ``row N, column C: msg``."""
    loc = list(error.get("loc") or [])
    msg = str(error.get("msg", ""))
    if loc[:3] == ["body", "file", "row"] and len(loc) >= 4:
        column = f", column {loc[4]}" if len(loc) >= 5 else ""
        return f"row {loc[3]}{column}: {msg}"
    where = ".".join(str(part) for part in loc[1:] if part != "body") or "request"
    return f"{where}: {msg}"


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list) and detail:
        lines = "\n".join(describe_error(e) for e in detail if isinstance(e, dict))
        raise CommandFailed(f"HTTP {response.status_code}:\n{lines}")
    raise CommandFailed(f"HTTP {response.status_code}: {response.text[:2000]}")


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return _check(client.request(method, path, **kwargs))
    except httpx.HTTPError as exc:
        raise CommandFailed(f"cannot reach the API at {client.base_url}: {exc}") from None


def parse_schedule(text: str) -> int:
    """``--schedule``: Unix seconds, or ISO 8601 (local time when it has no offset)."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        return int(datetime.fromisoformat(stripped).timestamp())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither Unix seconds nor an ISO 8601 time"
        ) from None


# --------------------------------------------------------------------------------------------
# submit


def cmd_submit(args: argparse.Namespace) -> int:
    """Upload a CSV through submit-csv, print the batch id, and optionally watch it."""
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror}") from None
    form: dict[str, str] = {"call_name": args.name or path.stem, "agent_id": args.agent}
    if args.phone_number:
        form["agent_phone_number_id"] = args.phone_number
    if args.schedule is not None:
        form["scheduled_time_unix"] = str(args.schedule)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    with _client(args) as client:
        batch = _request(
            client,
            "POST",
            f"{BATCHES}/submit-csv",
            data=form,
            files={"file": (path.name, data, "text/csv")},
            headers=headers,
        ).json()
        print(batch["id"], flush=True)
        print(
            f"Submitted batch {batch['id']} ({batch['name']}): "
            f"{batch['total_calls_scheduled']} recipients, status {batch['status']}",
            file=sys.stderr,
        )
        if args.watch:
            return watch(client, str(batch["id"]), sys.stdout)
    return 0


# --------------------------------------------------------------------------------------------
# watch


def _final_count(batch: dict[str, Any]) -> int:
    statuses = recipient_counts(batch, "status")
    return sum(n for status, n in statuses.items() if status in RECIPIENT_FINAL_STATUSES)


def _live_view(batch: dict[str, Any], progress: Progress, task: Any) -> Group:
    total = len(batch.get("recipients", []))
    progress.update(task, completed=_final_count(batch), total=total or None)
    counters = Table.grid(padding=(0, 2))
    for _counter in COUNTERS:
        counters.add_column(justify="right")
    counters.add_row(*(f"[bold]{label}[/]" for _key, label in COUNTERS))
    counters.add_row(*(str(batch.get(key, 0)) for key, _label in COUNTERS))
    statuses = Table.grid(padding=(0, 2))
    by_status = recipient_counts(batch, "status").most_common()
    for _entry in by_status:
        statuses.add_column(justify="right")
    if by_status:
        statuses.add_row(*(f"[bold]{status}[/]" for status, _n in by_status))
        statuses.add_row(*(str(n) for _status, n in by_status))
    # Text, not markup: a batch name may contain square brackets.
    title = Text(f"Batch {batch.get('id')} ({batch.get('name', '')}): {batch.get('status', '?')}")
    return Group(title, progress, counters, statuses)


def watch(client: httpx.Client, batch_id: str, out: TextIO) -> int:
    """Poll the batch about once a second until it is completed, failed or cancelled, then
    print a summary. A terminal gets a live display; anything else one line per poll."""
    started = time.monotonic()
    path = f"{BATCHES}/{batch_id}"
    batch = _request(client, "GET", path).json()
    if out.isatty():
        console = Console(file=out)
        progress = Progress(
            TextColumn("final recipients"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        task = progress.add_task("final", total=None)
        with Live(_live_view(batch, progress, task), console=console, auto_refresh=False) as live:
            while batch.get("status") not in BATCH_FINAL_STATUSES:
                time.sleep(POLL_INTERVAL_S)
                batch = _poll(client, path, batch, out=None)
                live.update(_live_view(batch, progress, task), refresh=True)
    else:
        out.write(format_progress(batch, time.monotonic() - started) + "\n")
        out.flush()
        while batch.get("status") not in BATCH_FINAL_STATUSES:
            time.sleep(POLL_INTERVAL_S)
            batch = _poll(client, path, batch, out=out)
            out.write(format_progress(batch, time.monotonic() - started) + "\n")
            out.flush()
    out.write(format_summary(batch, time.monotonic() - started, None) + "\n")
    out.flush()
    return 0


def _poll(
    client: httpx.Client, path: str, last: dict[str, Any], out: TextIO | None
) -> dict[str, Any]:
    """The batch now; a failed poll (the API restarting) keeps the last view and tries again."""
    try:
        response = client.get(path)
        if response.is_success:
            fresh: dict[str, Any] = response.json()
            return fresh
        problem = f"HTTP {response.status_code}"
        if response.status_code in (401, 404):
            _check(response)  # a lost key or batch will not come back
    except httpx.HTTPError as exc:
        problem = str(exc)
    print(f"(poll failed: {problem}; retrying)", file=out or sys.stderr, flush=True)
    return last


def cmd_watch(args: argparse.Namespace) -> int:
    """``switchboard watch BATCH_ID``."""
    with _client(args) as client:
        return watch(client, args.batch_id, sys.stdout)


# --------------------------------------------------------------------------------------------
# batches, export


def _when(unix: Any) -> str:
    return datetime.fromtimestamp(int(unix)).strftime("%Y-%m-%d %H:%M:%S") if unix else ""


def batches_table(batches: list[dict[str, Any]]) -> Table:
    """The workspace's batches as a table: id, name, status, the four counters, created."""
    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("status", no_wrap=True)
    for _key, label in COUNTERS:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for batch in batches:
        table.add_row(
            Text(str(batch["id"])),
            Text(str(batch.get("name", ""))),
            str(batch.get("status", "")) + (" (paused)" if batch.get("paused") else ""),
            *(str(batch.get(key, 0)) for key, _label in COUNTERS),
            _when(batch.get("created_at_unix")),
        )
    return table


def cmd_batches(args: argparse.Namespace) -> int:
    """``switchboard batches [--limit N]``: newest first."""
    with _client(args) as client:
        listing = _request(client, "GET", f"{BATCHES}/workspace", params={"limit": args.limit})
    batches: list[dict[str, Any]] = listing.json()["batch_calls"]
    # A pipe gets a wide table rather than one folded to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(batches_table(batches))
    if not batches:
        print("no batches yet", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``switchboard export BATCH_ID``: the results CSV on stdout."""
    with _client(args) as client:
        response = _request(client, "GET", f"{BATCHES}/{args.batch_id}/export.csv")
    sys.stdout.buffer.write(response.content)
    sys.stdout.flush()
    return 0


def limit_1_to_100(text: str) -> int:
    """``--limit``: what the listing endpoint accepts."""
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("the limit is 1 to 100")
    return value


def add_batch_commands(commands: Any) -> None:
    """Register submit, watch, batches and export on the ``switchboard`` subparsers."""
    submit = commands.add_parser(
        "submit",
        help="submit a batch from a CSV file (phone_number, optional id, variable columns)",
    )
    submit.add_argument("file", metavar="FILE.csv")
    submit.add_argument("--agent", required=True, help="agent id")
    submit.add_argument("--phone-number", help="caller phone number id (default: the first)")
    submit.add_argument("--name", help="batch name (default: the file name)")
    submit.add_argument(
        "--schedule", type=parse_schedule, help="start time: ISO 8601 or Unix seconds"
    )
    submit.add_argument("--idempotency-key", help="sent as the Idempotency-Key header")
    submit.add_argument("--watch", action="store_true", help="then show progress until it ends")
    add_api_arguments(submit)
    submit.set_defaults(handler=cmd_submit)

    watch_parser = commands.add_parser("watch", help="show a batch's progress until it ends")
    watch_parser.add_argument("batch_id", metavar="BATCH_ID")
    add_api_arguments(watch_parser)
    watch_parser.set_defaults(handler=cmd_watch)

    batches = commands.add_parser("batches", help="list the workspace's batches, newest first")
    batches.add_argument("--limit", type=limit_1_to_100, default=20)
    add_api_arguments(batches)
    batches.set_defaults(handler=cmd_batches)

    export = commands.add_parser("export", help="write a batch's results CSV to stdout")
    export.add_argument("batch_id", metavar="BATCH_ID")
    add_api_arguments(export)
    export.set_defaults(handler=cmd_export)
