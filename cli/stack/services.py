"""The services a stack runs on: the database and Redis of DATABASE_URL / REDIS_URL (checked
before anything starts) or embedded ones, the broker the environment names, and a RabbitMQ
virtual host of a stack's own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cli.stack.databases import check_database
from cli.stack.embedded import start_embedded_postgres, start_embedded_redis
from cli.stack.net import LOCALHOST, ServiceUnavailable, redact_url

# Where Celery's broker is, as Settings reads it (the bare name wins); unset, it is REDIS_URL.
BROKER_URL_VARIABLES = ("CELERY_BROKER_URL", "SWITCHBOARD_BROKER_URL")


@dataclass(frozen=True)
class Services:
    """Where the database and the broker are, and which of them this process started."""

    database_url: str
    redis_url: str
    embedded: tuple[str, ...] = ()


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


def _configured(environ: Mapping[str, str], *names: str) -> str | None:
    # Same precedence as Settings: the bare name wins over the SWITCHBOARD_ alias.
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def configured_broker_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The broker URL the environment names (CELERY_BROKER_URL first, as Settings reads it),
    or None: the broker is then the Redis of REDIS_URL."""
    return _configured(os.environ if environ is None else environ, *BROKER_URL_VARIABLES)


def _rabbitmqctl(*args: str) -> None:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")


@contextlib.contextmanager
def rabbitmq_vhost(
    url: str, prefix: str, *, strict: bool = False, announce: Callable[[str], None] = print
) -> Iterator[str]:
    """A virtual host of its own on the RabbitMQ server of ``url`` for one run, so its queues
    (``dial``, ``status``, ...) are not those of another stack on the same server; yields the
    broker URL naming it and deletes it (with its queues) on exit.

    Virtual hosts are made with ``rabbitmqctl`` on the broker's machine. When the broker is not
    on this machine or ``rabbitmqctl`` fails, ``url``'s own virtual host is used as it is, or,
    ``strict`` (the tests: a broker that does not answer fails them), the error is raised."""
    parts = urlsplit(url)
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    try:
        if not strict and parts.hostname not in (None, "", "localhost", LOCALHOST):
            raise OSError(f"{parts.hostname} is not this machine")
        _rabbitmqctl("add_vhost", name)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        if strict:
            raise
        vhost = parts.path[1:] or "/"
        announce(f"Using RabbitMQ's virtual host {vhost!r} of {redact_url(url)} ({exc})")
        yield url
        return
    try:
        _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
        announce(f"RabbitMQ virtual host {name} (deleted at the end)")
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
            _rabbitmqctl("delete_vhost", name)


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
