"""The benchmark suite: prints figures against the targets in docs/BENCHMARKS.md; asserts nothing.

    python bench/dispatch.py [--recipients 10000] [--workers 1 2] [--concurrency 32]
                             [--repeat 3] [--live-call-cap 1000] [--only a b c d e f]
                             [--brokers redis rabbitmq]

(a) submit latency for 1,000 and 10,000 recipients, p50 and p95;
(b) end to end, 10,000 recipients submit → all final against the sandbox (zero latency) with
    1 and 2 worker processes, next to the rate the same workers drain no-op tasks; each run
    on a fresh stack, ``--repeat`` times, and the median ratio (the runs of one machine differ
    by up to a fifth in their no-op rates);
(c) the same with 150 ms provider latency from one worker process;
(d) database transactions and statements, and Redis commands, per call;
(e) worker resident memory during (b);
(f) time from submit to the first dial, p50.

Uses DATABASE_URL / REDIS_URL when set, else embedded servers started here (statements are
counted only on an embedded server, whose statement log this script switches on).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.stack.services import rabbitmq_vhost  # noqa: E402
from harness.factories import create_agent, recipients, register_number, submit  # noqa: E402
from harness.stack import (  # noqa: E402
    Stack,
    migrated_template,
    new_api_key,
    running_stack,
)
from shared import heap  # noqa: E402

ZERO_LATENCY = {"rules": [{"pattern": "*", "ring_seconds": 0.01, "talk_seconds": 0.02}]}
SLOW_PROVIDER = {
    "rules": [{"pattern": "*", "api_latency_ms": 150, "ring_seconds": 0.01, "talk_seconds": 0.02}]
}


def _say(text: str) -> None:
    print(text, flush=True)


def _services(resources: ExitStack, state: Path) -> tuple[str, str, Path | None]:
    """(PostgreSQL server URL, Redis URL, PostgreSQL's log when it is embedded): DATABASE_URL /
    REDIS_URL when set, else embedded servers in ``state``, stopped when ``resources`` closes."""
    from cli.stack.services import resolve_services

    services = resources.enter_context(resolve_services(state))
    pg_log = state / "pg" / "log" if "postgres" in services.embedded else None
    return services.database_url, services.redis_url, pg_log


def _migrated_template(resources: ExitStack, server_url: str) -> str:
    """A database at the newest migration that each stack's database is copied from; dropped
    when ``resources`` closes."""
    return resources.enter_context(migrated_template(server_url, "sbbench_template_"))


# A line of PostgreSQL's statement log (log_line_prefix '%m [%p] '): the backend, the statement.
STATEMENT_LOG_LINE = re.compile(r"\[(\d+)\] LOG:  statement: (.*)")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


@contextmanager
def _stack_settings(stack: Stack) -> Iterator[None]:
    """Publish from this process into the stack's broker (its Redis key prefix)."""
    from shared import messaging
    from shared.settings import get_settings

    saved = dict(os.environ)
    os.environ.update(stack.env())
    get_settings.cache_clear()
    messaging.get_app.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        messaging.get_app.cache_clear()


def _autocommit(stack: Stack, statement: str) -> None:
    """Run a statement that may not run in a transaction (ALTER SYSTEM)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    dsn = (
        make_url(stack.database_url)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg2", "postgresql")
    )
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _batch(stack: Stack, batch_id: str) -> tuple[int, int, str]:
    finished, dispatched, status = stack.sql(
        "SELECT total_calls_finished, total_calls_dispatched, status FROM batches WHERE id = %s",
        batch_id,
    )[0]
    return int(finished), int(dispatched), str(status)


def _wait_final(stack: Stack, batch_id: str, timeout: float, poll_s: float = 0.25) -> int:
    """Poll until the batch ends; how many polls it took."""
    started, polls = time.perf_counter(), 0
    while time.perf_counter() - started < timeout:
        polls += 1
        if _batch(stack, batch_id)[2] in ("completed", "failed"):
            return polls
        time.sleep(poll_s)
    raise TimeoutError(f"batch {batch_id} not final after {timeout} s")


class RssSampler:
    """The largest resident set of the given processes, sampled twice a second."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            self._stop.wait(0.5)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU seconds used by each part of the stack over a span, read from /proc (Linux): the
    workers, the API and beat (by pid, with their children), PostgreSQL and Redis (every such
    process on the machine), and this process, which runs the sandbox carrier."""

    def __init__(self, stack: Stack) -> None:
        self.parts = {
            "workers": {p.pid for n, p in stack.processes.items() if n.startswith("worker")},
            "API": {stack.processes["api"].pid} if "api" in stack.processes else set(),
            "beat": {stack.processes["beat"].pid} if "beat" in stack.processes else set(),
            "carrier": {os.getpid()},
        }
        self.start = self._sample()

    @staticmethod
    def _processes() -> Iterator[tuple[int, int, str, float]]:
        ticks = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            yield int(entry.name), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / ticks

    def _sample(self) -> dict[int, tuple[str, float]]:
        processes = list(self._processes())
        parent = {pid: ppid for pid, ppid, _, _ in processes}
        sample = {}
        for pid, _, name, seconds in processes:
            part = None
            if name.startswith("postgres"):
                part = "PostgreSQL"
            elif name.startswith("redis"):
                part = "Redis"
            else:
                ancestor = pid
                while ancestor > 1 and part is None:
                    part = next((k for k, pids in self.parts.items() if ancestor in pids), None)
                    ancestor = parent.get(ancestor, 1)
            if part is not None:
                sample[pid] = (part, seconds)
        return sample

    def per_call_ms(self, calls: int) -> str:
        end = self._sample()
        used: dict[str, float] = {}
        for pid, (part, seconds) in end.items():
            used[part] = used.get(part, 0.0) + seconds - self.start.get(pid, (part, 0.0))[1]
        order = ["workers", "PostgreSQL", "carrier", "API", "Redis", "beat"]
        shown = ", ".join(f"{part} {used.get(part, 0.0) / calls * 1000:.2f}" for part in order)
        return f"{shown}; in all {sum(used.values()) / calls * 1000:.2f} ms"


def _noop_drain_rate(stack: Stack, count: int) -> float:
    """Publish ``count`` no-op tasks to the dial queue; the rate the workers drain them."""
    from shared import messaging

    with _stack_settings(stack):
        started = time.perf_counter()
        messaging.publish_many(messaging.TASK_NOOP, ([i] for i in range(count)))
        while messaging.queue_length(messaging.QUEUE_DIAL) > 0:
            time.sleep(0.02)
        return count / (time.perf_counter() - started)


def _setup(stack: Stack) -> tuple[Any, str, str]:
    client = stack.client(new_api_key(stack))
    return client, create_agent(client), register_number(client)


def bench_submit(stack: Stack, samples: int) -> None:
    client, agent_id, number_id = _setup(stack)
    later = int(time.time()) + 86_400  # stored, never dialed here
    for size in (1_000, 10_000):
        people = recipients(size)
        latencies = []
        for _ in range(samples):
            started = time.perf_counter()
            response = submit(client, agent_id, number_id, people, scheduled_time_unix=later)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        _say(
            f"(a) submit {size} recipients: p50 {statistics.median(latencies):.3f} s, "
            f"p95 {_percentile(latencies, 95):.3f} s ({samples} samples; target for 10,000: "
            "p50 <= 0.7 s)"
        )


def bench_end_to_end(
    stack: Stack, count: int, label: str, timeout: float, ratio_target: bool = True
) -> float:
    """One run: prints its figures; the ratio of its call rate to its no-op drain rate (whose
    target is (b)'s)."""
    client, agent_id, number_id = _setup(stack)
    time.sleep(2)  # let the workers finish starting
    heap.settle()  # this process serves the sandbox carrier, as `python -m sandbox` settles
    drain = _noop_drain_rate(stack, count)
    pids = [p.pid for name, p in stack.processes.items() if name.startswith("worker")]
    with RssSampler(pids) as rss:
        cpu = CpuMeter(stack)
        started = time.perf_counter()
        batch_id = submit(client, agent_id, number_id, recipients(count)).json()["id"]
        _wait_final(stack, batch_id, timeout)
        elapsed = time.perf_counter() - started
        cpu_per_call = cpu.per_call_ms(count)
    rate = count / elapsed
    target = " (target >= 40%)" if ratio_target else ""
    _say(
        f"{label}: {count} calls final in {elapsed:.1f} s = {rate:.0f} calls/s; no-op drain "
        f"{drain:.0f} tasks/s; ratio {rate / drain:.0%}{target}; "
        f"(e) peak worker RSS {rss.peak_kib / 1024:.0f} MiB\n"
        f"    CPU per call (ms): {cpu_per_call}"
    )
    return rate / drain


def bench_costs(stack: Stack, count: int, pg_log: Path | None) -> None:
    import redis

    client, agent_id, number_id = _setup(stack)
    time.sleep(2)
    database = stack.database_url.rsplit("/", 1)[-1].split("?")[0]

    def commits() -> int:
        return int(
            stack.sql(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                database,
            )[0][0]
        )

    def redis_calls() -> int:
        stats = redis.Redis.from_url(stack.redis_url).info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    if pg_log is not None:
        _autocommit(stack, "ALTER SYSTEM SET log_statement = 'all'")
        _autocommit(stack, "SELECT pg_reload_conf()")
        time.sleep(1)
    log_start = pg_log.stat().st_size if pg_log else 0
    xacts_before, redis_before = commits(), redis_calls()
    batch_id = submit(client, agent_id, number_id, recipients(count, "+1646555")).json()["id"]
    polls = _wait_final(stack, batch_id, 300, poll_s=1.0)
    time.sleep(1)  # the last callbacks' transactions
    # This script's own reads: one per poll, and the counter reads.
    own = polls + 2
    xacts = commits() - xacts_before - own
    commands = redis_calls() - redis_before
    statements = None
    if pg_log is not None:
        _autocommit(stack, "ALTER SYSTEM RESET log_statement")
        _autocommit(stack, "SELECT pg_reload_conf()")
        with pg_log.open(errors="replace") as log:
            log.seek(log_start)
            lines = [line for line in log if "statement: " in line]
        # The statement log shows every transaction this stack ran (pg_stat_database also
        # counts the server's own, autovacuum and statistics, and is only the fallback): a
        # COMMIT or ROLLBACK ends one, and a statement outside BEGIN ... COMMIT on its
        # connection (the claim, run in autocommit mode) is one of its own.
        in_transaction: set[str] = set()
        xacts = statements = 0
        for line in lines:
            found = STATEMENT_LOG_LINE.search(line)
            if found is None:
                continue
            backend, sql = found.groups()
            if sql.startswith("BEGIN"):
                in_transaction.add(backend)
            elif sql.startswith(("COMMIT", "ROLLBACK")):
                in_transaction.discard(backend)
                xacts += 1
            else:
                statements += 1
                xacts += backend not in in_transaction
        xacts -= own
        statements -= own
    _say(
        f"(d) per call, over {count} calls: {xacts / count:.2f} database transactions "
        f"(target <= 4); "
        + (
            f"{statements / count:.1f} statements besides BEGIN/COMMIT; "
            if statements is not None
            else "statements not counted (external server); "
        )
        + f"{commands / count:.1f} Redis commands (the beat's ticks and idle polls included)"
    )


def bench_first_dial(stack: Stack, samples: int) -> None:
    client, agent_id, number_id = _setup(stack)
    time.sleep(2)
    delays = []
    for index in range(samples):
        prefix_start = 5000 + index * 10
        started = time.time()
        submit(client, agent_id, number_id, recipients(10, "+1646555", prefix_start))
        target = f"+1646555{prefix_start:04d}"
        while True:
            placed = [c for c in stack.carrier.calls() if c["to"] == target]
            if placed:
                delays.append(placed[0]["created_at"] - started)
                break
            if time.time() - started > 30:
                raise TimeoutError("no dial within 30 s")
            time.sleep(0.005)
        time.sleep(0.5)
    _say(
        f"(f) submit to first dial: p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"p95 {_percentile(delays, 95) * 1000:.0f} ms ({samples} batches; target p50 <= 1 s)"
    )


def run(args: argparse.Namespace) -> None:
    only = set(args.only)
    # The workspace's live-call cap (default 200) bounds a run at 200 calls per call lifetime,
    # and a sandbox call lives as long as its callbacks, posted one after another, take:
    # the end-to-end figures are taken under a higher cap, so that they measure the dispatcher.
    os.environ["SWITCHBOARD_MAX_LIVE_CALLS_PER_WORKSPACE"] = str(args.live_call_cap)
    with tempfile.TemporaryDirectory(prefix="sbbench") as tmp, ExitStack() as resources:
        server_url, redis_url, pg_log = _services(resources, Path(tmp))
        template = _migrated_template(resources, server_url)

        def stack(
            name: str,
            sandbox: dict[str, Any],
            workers: int,
            concurrency: int,
            broker_url: str | None = None,
        ) -> Any:
            return running_stack(
                server_url,
                template,
                redis_url,
                Path(tmp) / name,
                sandbox=sandbox,
                workers=workers,
                beat=True,
                concurrency=concurrency,
                # No webhook endpoints here: the webhooks worker would only idle beside the
                # workers measured.
                webhooks_worker=False,
                broker_url=broker_url,
            )

        if only & {"a", "f"}:
            with stack("af", ZERO_LATENCY, 1, args.concurrency) as s:
                if "a" in only:
                    bench_submit(s, args.submit_samples)
                if "f" in only:
                    bench_first_dial(s, args.first_dial_samples)
        for broker in args.brokers if only & {"b", "e"} else ():
            for workers in args.workers:
                label = f"(b) {workers} worker process(es) x {args.concurrency} threads"
                label += "" if broker == "redis" else f", {broker}"
                ratios = []
                for attempt in range(args.repeat):
                    name = f"b{workers}-{broker}-{attempt}"
                    with ExitStack() as run_resources:
                        broker_url = None
                        if broker == "rabbitmq":
                            broker_url = run_resources.enter_context(
                                rabbitmq_vhost(args.rabbitmq_url, "sbbench_", announce=_say)
                            )
                        s = run_resources.enter_context(
                            stack(name, ZERO_LATENCY, workers, args.concurrency, broker_url)
                        )
                        ratios.append(bench_end_to_end(s, args.recipients, label, args.timeout))
                if len(ratios) > 1:
                    shown = ", ".join(f"{ratio:.0%}" for ratio in ratios)
                    _say(
                        f"{label}: median ratio {statistics.median(ratios):.0%} over "
                        f"{len(ratios)} runs ({shown}; target >= 40%)"
                    )
        if "c" in only:
            with stack("c", SLOW_PROVIDER, 1, args.slow_concurrency) as s:
                bench_end_to_end(
                    s,
                    args.recipients,
                    f"(c) 150 ms provider latency, 1 worker process x {args.slow_concurrency} "
                    "threads (target >= 200 calls/s)",
                    args.timeout,
                    ratio_target=False,
                )
        if "d" in only:
            with stack("d", ZERO_LATENCY, 1, args.concurrency) as s:
                bench_costs(s, args.cost_recipients, pg_log)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--slow-concurrency", type=int, default=64)
    parser.add_argument("--submit-samples", type=int, default=7)
    parser.add_argument("--first-dial-samples", type=int, default=15)
    parser.add_argument("--cost-recipients", type=int, default=1_000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--live-call-cap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of (b) per worker count")
    parser.add_argument("--only", nargs="+", default=list("abcdef"))
    # (b) on each broker named: RabbitMQ runs on a virtual host of its own on --rabbitmq-url.
    parser.add_argument("--brokers", nargs="+", choices=("redis", "rabbitmq"), default=["redis"])
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672//")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
