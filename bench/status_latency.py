"""Status callbacks behind a dial backlog: from a provider's status callback to its status in
PostgreSQL, with the dial queue empty and with 10,000 dial messages queued, on each broker.

    python bench/status_latency.py [--brokers redis rabbitmq] [--callbacks 50]
                                   [--backlog 10000] [--rabbitmq-url amqp://...]

Each broker gets a fresh dev stack (cli/stack/launcher.py: embedded PostgreSQL and Redis in a
temporary directory, the sandbox carrier, API, workers, beat), with its workers as each broker
wants them: on Redis one worker for batch-control, status and dial (its priority order takes
status first); on RabbitMQ a worker for batch-control and status and another for dial, in a
virtual host of its own. Then:

1. A batch of 2 x ``--callbacks`` calls is dialed; the sandbox answers every call and keeps it
   talking for an hour, so each stays in progress until its callback.
2. A batch scheduled a day ahead is submitted: its calls are pending but not claimable.
3. Empty dial queue: for ``--callbacks`` live calls one after another, a signed ``completed``
   status callback is POSTed to the API as Twilio would, and the time until the call's status
   in PostgreSQL changes is measured (polled every 2 ms).
4. Backlog: ``calls.dial`` messages for the scheduled calls (cycling through them) fill the dial
   queue to ``--backlog``; before every callback it is topped up again when the dial workers
   have taken more than a tenth of it. The same measure on the other half of the live calls.

Prints p50 / p95 / max per broker and phase, the backlog's depth when the callbacks were sent,
and the ratio of each figure with the backlog to the same with the empty queue. Asserts nothing.
DATABASE_URL and REDIS_URL are ignored: every stack has servers of its own.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.demo import demo_recipients  # noqa: E402
from cli.stack.launcher import RunningStack, launch_private_stack  # noqa: E402
from cli.stack.net import ApiClient  # noqa: E402
from cli.stack.services import BROKER_URL_VARIABLES  # noqa: E402

# Every call is answered at once and then talks for an hour: it stays in progress until the
# benchmark's own callback ends it.
SANDBOX_CONFIG = (
    '{"rules": [{"pattern": "*", "outcome": "completed", '
    '"ring_seconds": 0.05, "talk_seconds": 3600}]}\n'
)
SCHEDULED_CALLS = 2000
POLL_INTERVAL_S = 0.002
APPLY_TIMEOUT_S = 60.0
# The backlog is topped up before a callback once the workers have taken this share of it.
TOP_UP_BELOW = 0.9
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
# The opener the dev stack uses: no proxy between us and 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _say(text: str) -> None:
    print(text, flush=True)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


@dataclass
class Phase:
    """The callbacks of one phase: seconds from POST to applied, the dial depth at each POST."""

    latencies: list[float]
    depths: list[int]
    # Dial messages the workers took during the phase, and its length in seconds.
    dials_taken: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, float]:
        return {
            "p50": _percentile(self.latencies, 50),
            "p95": _percentile(self.latencies, 95),
            "max": max(self.latencies),
        }


class CallStatusReader:
    """Reads one call's status from the stack's database, over one autocommit connection."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        self._engine = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._connection = self._engine.connect()
        self._text = text

    def status(self, call_id: str) -> str:
        row = self._connection.execute(
            self._text("SELECT status FROM calls WHERE id = :id"), {"id": call_id}
        ).one()
        return str(row.status)

    def calls(self, batch_id: str, status: str | None = None) -> list[tuple[str, str | None]]:
        """(id, provider call sid) of a batch's calls, those with ``status`` when given."""
        rows = self._connection.execute(
            self._text(
                "SELECT id, provider_call_sid FROM calls WHERE batch_id = :batch "
                "AND (CAST(:status AS text) IS NULL OR status = :status) ORDER BY position"
            ),
            {"batch": batch_id, "status": status},
        ).all()
        return [(row.id, row.provider_call_sid) for row in rows]

    def close(self) -> None:
        self._connection.close()
        self._engine.dispose()


def _submit(client: ApiClient, stack: RunningStack, count: int, **extra: Any) -> str:
    body = {
        "call_name": f"status latency {uuid.uuid4().hex[:6]}",
        "agent_id": stack.workspace.agent_id,
        "agent_phone_number_id": stack.workspace.phone_number_id,
        "recipients": demo_recipients(count),
        **extra,
    }
    return str(client.post("/v1/voiceai/batch-calling/submit", body)["id"])


def _wait_in_progress(reader: CallStatusReader, batch_id: str, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 180
    while True:
        live = [(cid, sid) for cid, sid in reader.calls(batch_id, "in_progress") if sid]
        if len(live) >= count:
            return live
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(live)} of {count} calls in progress after 180 s")
        time.sleep(0.5)


def _post_completed(api_url: str, call_id: str, sid: str) -> None:
    """A ``completed`` status callback for ``call_id``, signed as Twilio signs it."""
    from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
    from shared.telephony.twilio import request_signature
    from shared.urls import TWILIO_STATUS_PATH

    url = api_url + TWILIO_STATUS_PATH.format(call_id=call_id)
    form = {
        "AccountSid": SANDBOX_ACCOUNT_SID,
        "CallSid": sid,
        "CallStatus": "completed",
        "CallDuration": "12",
    }
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": request_signature(SANDBOX_AUTH_TOKEN, url, form),
        },
        method="POST",
    )
    with _OPENER.open(request, timeout=30) as response:
        if response.status != 204:
            raise RuntimeError(f"status callback answered {response.status}")


def _measure(
    stack: RunningStack,
    reader: CallStatusReader,
    calls: list[tuple[str, str]],
    before_each: Callable[[], None] | None = None,
) -> Phase:
    from shared.messaging import QUEUE_DIAL, queue_length

    phase = Phase(latencies=[], depths=[])
    for call_id, sid in calls:
        if before_each is not None:
            before_each()
        phase.depths.append(queue_length(QUEUE_DIAL))
        started = time.perf_counter()
        _post_completed(stack.api_url, call_id, sid)
        while reader.status(call_id) == "in_progress":
            if time.perf_counter() - started > APPLY_TIMEOUT_S:
                raise TimeoutError(f"the callback of {call_id} was not applied in 60 s")
            time.sleep(POLL_INTERVAL_S)
        phase.latencies.append(time.perf_counter() - started)
    return phase


class Backlog:
    """Keeps the dial queue near ``target`` messages for calls that cannot be claimed."""

    def __init__(self, call_ids: list[str], target: int) -> None:
        self._ids = itertools.cycle(call_ids)
        self.target = target
        self.published = 0
        self.started = time.monotonic()
        # The fewest messages seen waiting before a top-up, once the queue was first filled.
        self.lowest: int | None = None

    def fill(self) -> None:
        from shared.messaging import QUEUE_DIAL, TASK_DIAL, publish_many, queue_length

        depth = queue_length(QUEUE_DIAL)
        if self.published:
            self.lowest = depth if self.lowest is None else min(self.lowest, depth)
        if depth < self.target * TOP_UP_BELOW:
            missing = self.target - depth
            self.published += publish_many(TASK_DIAL, ([next(self._ids)] for _ in range(missing)))


def _start_stack(
    broker: str, rabbitmq_url: str, resources: ExitStack, state_dir: Path
) -> RunningStack:
    """A fresh dev stack of ``broker``, stopped when ``resources`` closes."""
    sandbox_config = state_dir / "sandbox.json"
    sandbox_config.write_text(SANDBOX_CONFIG)
    return resources.enter_context(
        launch_private_stack(
            state_dir,
            "bench",
            sandbox_config=sandbox_config,
            broker_url=rabbitmq_url if broker == "rabbitmq" else None,
            stop_event=threading.Event(),
            announce=_say,
        )
    )


def run_broker(broker: str, args: argparse.Namespace) -> dict[str, Phase]:
    """Both phases on a fresh stack of ``broker``."""
    from shared.messaging import QUEUE_DIAL, queue_length

    state_dir = Path(tempfile.mkdtemp(prefix=f"sbstatus-{broker}-"))
    with ExitStack() as resources:
        stack = _start_stack(broker, args.rabbitmq_url, resources, state_dir)
        _say(f"[{broker}] workers: " + ", ".join(_worker_queues()))
        client = ApiClient(stack.api_url, stack.workspace.api_key)
        reader = CallStatusReader(stack.services.database_url)
        resources.callback(reader.close)
        live_batch = _submit(client, stack, 2 * args.callbacks)
        live = _wait_in_progress(reader, live_batch, 2 * args.callbacks)
        scheduled = _submit(
            client, stack, SCHEDULED_CALLS, scheduled_time_unix=int(time.time()) + 86400
        )
        scheduled_ids = [cid for cid, _ in reader.calls(scheduled)]
        _say(f"[{broker}] {len(live)} calls in progress; {len(scheduled_ids)} calls scheduled")

        empty = _measure(stack, reader, live[: args.callbacks])
        backlog = Backlog(scheduled_ids, args.backlog)
        backlog.fill()
        filled, depth_before = backlog.published, queue_length(QUEUE_DIAL)
        started = time.monotonic()
        fill_s = started - backlog.started
        _say(f"[{broker}] dial queue filled: {filled} messages in {fill_s:.1f} s")
        behind = _measure(stack, reader, live[args.callbacks :], before_each=backlog.fill)
        elapsed = time.monotonic() - started
        # What the dial workers took meanwhile: a worker that stopped consuming shows here.
        behind.dials_taken = depth_before + backlog.published - filled - queue_length(QUEUE_DIAL)
        behind.seconds = elapsed
        _say(
            f"[{broker}] while the callbacks were measured ({elapsed:.1f} s): "
            f"{backlog.published - filled} dial messages topped up, {behind.dials_taken} taken "
            f"by the dial workers; the fewest waiting before a top-up: {backlog.lowest}"
        )
        # Stopping a dial worker waits for what it holds: empty the queue first.
        from shared.messaging import get_app

        get_app().control.purge()
    if args.keep:
        _say(f"[{broker}] logs of every process: {state_dir / 'logs'}")
    else:
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"empty": empty, "backlog": behind}


def _worker_queues() -> list[str]:
    """The stack's Celery workers and their queues, as launch_stack started them."""
    from cli.stack.commands import worker_processes
    from shared.settings import get_settings

    workers = worker_processes(get_settings().broker_url)
    return [f"{name} -Q {argv[argv.index('-Q') + 1]}" for name, argv in workers.items()]


def _report(broker: str, phases: dict[str, Phase]) -> None:
    empty, behind = phases["empty"].figures(), phases["backlog"].figures()
    depths = phases["backlog"].depths
    _say(
        f"{broker:<9} empty queue      p50 {empty['p50'] * 1000:7.1f} ms  "
        f"p95 {empty['p95'] * 1000:7.1f} ms  max {empty['max'] * 1000:7.1f} ms"
    )
    _say(
        f"{broker:<9} {len(depths)} behind dials  p50 {behind['p50'] * 1000:7.1f} ms  "
        f"p95 {behind['p95'] * 1000:7.1f} ms  max {behind['max'] * 1000:7.1f} ms  "
        f"(dial queue at each callback: min {min(depths)}, "
        f"median {statistics.median(depths):.0f}, max {max(depths)}; dials taken "
        f"{phases['backlog'].dials_taken / phases['backlog'].seconds:.0f}/s)"
    )
    _say(
        f"{broker:<9} ratio            p50 {behind['p50'] / empty['p50']:5.2f}x  "
        f"p95 {behind['p95'] / empty['p95']:5.2f}x  max {behind['max'] / empty['max']:5.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", nargs="+", choices=("redis", "rabbitmq"),
                        default=["redis", "rabbitmq"])  # fmt: skip
    parser.add_argument("--callbacks", type=int, default=50)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rabbitmq-url", default=DEFAULT_RABBITMQ_URL)
    parser.add_argument("--keep", action="store_true", help="keep each stack's process logs")
    args = parser.parse_args()

    from shared import db, messaging
    from shared.settings import get_settings

    # Every stack starts servers of its own, and names its broker itself.
    for name in ("DATABASE_URL", "SWITCHBOARD_DATABASE_URL", "REDIS_URL",
                 "SWITCHBOARD_REDIS_URL", *BROKER_URL_VARIABLES):  # fmt: skip
        os.environ.pop(name, None)
    saved = dict(os.environ)
    results = {}
    for broker in args.brokers:
        try:
            results[broker] = run_broker(broker, args)
        finally:
            # launch_stack pointed this process's settings at the stack that is now gone.
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
            messaging.get_app.cache_clear()
            db.reset_engine()
    _say("")
    _say(f"Status callback to status applied, {args.callbacks} callbacks per phase:")
    for broker, phases in results.items():
        _report(broker, phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
