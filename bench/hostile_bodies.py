"""Hostile bodies: what ten concurrent 50 MB unauthenticated bodies cost the API.

    python bench/hostile_bodies.py [--clients 10] [--megabytes 50]

Starts the API alone (no workers: nothing here reaches them), measures its resident memory and
/healthz latency at idle, then sends ``--clients`` concurrent bodies of ``--megabytes`` each,
to POST /v1/convai/batch-calling/submit: without an API key once with Content-Length and once
chunked without it, then chunked with a made-up key. Meanwhile it samples the API's resident
memory every 20 ms and times /healthz on a connection of its own. Prints the peak against idle
and the latencies; targets (docs/BENCHMARKS.md): memory within 50 MB of idle, /healthz under 50
ms. Asserts nothing.

Uses DATABASE_URL / REDIS_URL when set, else embedded servers started here.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch import _migrated_template, _percentile, _services  # noqa: E402
from harness.stack import (  # noqa: E402
    Stack,
    running_stack,
)

PATH = "/v1/convai/batch-calling/submit"
CHUNK = 64 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _healthz_ms(connection: http.client.HTTPConnection) -> float:
    started = time.perf_counter()
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


def _send_body(
    port: int, size: int, chunked: bool, key: str | None, outcomes: list[str], sent: list[int]
) -> None:
    """One client: a request head, then the body until it is all sent or the server stops it;
    records the answer's status (or how the connection ended) and the bytes it got to send."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    key_header = f"x-api-key: {key}\r\n" if key else ""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{key_header}{framing}\r\n\r\n"
    ).encode()
    piece = b"0" * CHUNK
    if chunked:
        piece = b"%x\r\n" % CHUNK + piece + b"\r\n"
    written = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            while written < size:
                sock.sendall(piece)
                written += CHUNK
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError as error:  # the server answered and closed: the rest is never read
            outcomes.append(f"closed while sending ({error.__class__.__name__})")
            sent.append(written)
            return
        sent.append(written)
        try:
            response = http.client.HTTPResponse(sock)
            response.begin()
            outcomes.append(str(response.status))
        except OSError as error:
            outcomes.append(f"closed ({error.__class__.__name__})")


def _attack(
    stack: Stack,
    clients: int,
    size: int,
    chunked: bool,
    idle_kib: int,
    idle_p95_ms: float,
    key: str | None = None,
) -> None:
    pid = stack.processes["api"].pid
    peak_kib = idle_kib
    latencies: list[float] = []
    outcomes: list[str] = []
    sent: list[int] = []
    done = threading.Event()

    def sample_rss() -> None:
        nonlocal peak_kib
        while not done.is_set():
            peak_kib = max(peak_kib, _rss_kib(pid))
            time.sleep(0.02)

    def probe_health() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=10)
        while not done.is_set():
            latencies.append(_healthz_ms(connection))
            time.sleep(0.01)
        connection.close()

    watchers = [threading.Thread(target=sample_rss), threading.Thread(target=probe_health)]
    senders = [
        threading.Thread(
            target=_send_body,
            args=(stack.api_port, size, chunked, key, outcomes, sent),
        )
        for _ in range(clients)
    ]
    for thread in watchers:
        thread.start()
    time.sleep(0.2)
    started = time.perf_counter()
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    elapsed = time.perf_counter() - started
    time.sleep(0.2)
    done.set()
    for thread in watchers:
        thread.join()
    kind = "chunked" if chunked else "Content-Length"
    counts = {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}
    who = f"API key {key!r}" if key else "no API key"
    print(f"\n{clients} x {size // 2**20} MB, {kind}, {who} ({elapsed:.2f} s):")
    print(f"  answers: {counts}; body sent before the server stopped it: max {max(sent)} bytes")
    print(
        f"  API RSS peak {peak_kib / 1024:.1f} MB, {(peak_kib - idle_kib) / 1024:+.1f} MB "
        f"against idle (target: within 50 MB)"
    )
    print(
        f"  /healthz meanwhile ({len(latencies)} requests): p50 "
        f"{statistics.median(latencies):.1f} ms, p95 {_percentile(latencies, 95):.1f} ms, "
        f"max {max(latencies):.1f} ms (target: under 50 ms); p95 "
        f"{_percentile(latencies, 95) / idle_p95_ms:.1f}x idle's, RSS peak "
        f"{peak_kib / idle_kib:.3f}x idle's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=50)
    args = parser.parse_args()
    with ExitStack() as resources:
        state = Path(resources.enter_context(tempfile.TemporaryDirectory()))
        server_url, redis_url, _ = _services(resources, state)
        template = _migrated_template(resources, server_url)
        stack = resources.enter_context(
            running_stack(
                server_url,
                template,
                redis_url,
                state / "stack",
                workers=0,
                beat=False,
                webhooks_worker=False,
            )
        )
        connection = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=10)
        for _ in range(50):  # warm up
            _healthz_ms(connection)
        idle = [_healthz_ms(connection) for _ in range(200)]
        connection.close()
        idle_kib = _rss_kib(stack.processes["api"].pid)
        idle_p95 = _percentile(idle, 95)
        print(
            f"idle: API RSS {idle_kib / 1024:.1f} MB; /healthz p50 {statistics.median(idle):.2f} "
            f"ms, p95 {_percentile(idle, 95):.2f} ms"
        )
        size = args.megabytes * 2**20
        _attack(stack, args.clients, size, chunked=False, idle_kib=idle_kib, idle_p95_ms=idle_p95)
        _attack(stack, args.clients, size, chunked=True, idle_kib=idle_kib, idle_p95_ms=idle_p95)
        # A key that does not exist: looked up before the body is read, never buffered.
        _attack(
            stack,
            args.clients,
            size,
            chunked=True,
            idle_kib=idle_kib,
            idle_p95_ms=idle_p95,
            key="sb_made_up",
        )


if __name__ == "__main__":
    main()
