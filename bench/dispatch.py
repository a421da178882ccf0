"""Dispatch benchmark: submit latency for 10,000 recipients, and the time from submit until all
10,000 calls are final against the sandbox carrier (zero latency), with 1 and 2 worker
processes. Prints figures; asserts nothing.

    python bench/dispatch.py [--recipients 10000] [--workers 1 2] [--concurrency 16]

Uses DATABASE_URL / REDIS_URL when set, else embedded servers started here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import new_api_key  # noqa: E402
from tests.factories import create_agent, recipients, register_number, submit  # noqa: E402
from tests.support import create_database, drop_database, running_stack  # noqa: E402


def _services(stack: ExitStack, state: Path) -> tuple[str, str]:
    import os

    from cli.devstack import start_embedded_postgres, start_embedded_redis

    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not database_url:
        server = start_embedded_postgres(state / "pg")
        stack.callback(server.stop)
        database_url = server.url
    if not redis_url:
        server = start_embedded_redis(state / "redis")
        stack.callback(server.stop)
        redis_url = server.url
    return database_url, redis_url


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> None:
    from shared.db import migrate

    with tempfile.TemporaryDirectory(prefix="sbbench") as tmp, ExitStack() as resources:
        server_url, redis_url = _services(resources, Path(tmp))
        template = f"sbbench_template_{uuid.uuid4().hex[:8]}"
        migrate(create_database(server_url, template))
        resources.callback(drop_database, server_url, template)
        sandbox = {"rules": [{"pattern": "*", "ring_seconds": 0.01, "talk_seconds": 0.02}]}

        for workers in args.workers:
            with running_stack(
                server_url,
                template,
                redis_url,
                Path(tmp) / f"w{workers}",
                sandbox=sandbox,
                workers=0,
                beat=True,
            ) as stack:
                for index in range(workers):
                    stack.start_worker(name=f"worker{index}", concurrency=args.concurrency)
                client = stack.client(new_api_key(stack))
                agent_id = create_agent(client)
                number_id = register_number(client)
                people = recipients(args.recipients)

                if workers == args.workers[0]:
                    later = int(time.time()) + 86_400  # stored, never dialed here
                    latencies = []
                    for _ in range(args.submit_samples):
                        started = time.perf_counter()
                        response = submit(
                            client, agent_id, number_id, people, scheduled_time_unix=later
                        )
                        latencies.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
                    print(
                        f"submit {args.recipients} recipients: "
                        f"p50 {statistics.median(latencies):.3f} s, "
                        f"p95 {_percentile(latencies, 95):.3f} s "
                        f"({args.submit_samples} samples)",
                        flush=True,
                    )

                time.sleep(3)  # let the workers finish starting
                started = time.perf_counter()
                response = submit(client, agent_id, number_id, people)
                submitted = time.perf_counter() - started
                batch_id = response.json()["id"]
                first_dial = None
                while True:
                    finished, dispatched, status = stack.sql(
                        "SELECT total_calls_finished, total_calls_dispatched, status "
                        "FROM batches WHERE id = %s",
                        batch_id,
                    )[0]
                    if first_dial is None and dispatched:
                        first_dial = time.perf_counter() - started
                    if status in ("completed", "failed"):
                        break
                    if time.perf_counter() - started > args.timeout:
                        print(f"timed out with {finished} finished", flush=True)
                        break
                    time.sleep(0.25)
                elapsed = time.perf_counter() - started
                placed = len(stack.carrier.calls())
                print(
                    f"{workers} worker process(es) x {args.concurrency} threads: "
                    f"{args.recipients} calls final in {elapsed:.1f} s "
                    f"({args.recipients / elapsed:.0f} calls/s; submit {submitted:.2f} s, "
                    f"first dial after {first_dial or 0:.2f} s, status {status}, "
                    f"carrier placed {placed})",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--submit-samples", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=900)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
