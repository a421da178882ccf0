"""Session fixtures: real PostgreSQL and Redis (the ones in DATABASE_URL / REDIS_URL, or
embedded servers started here), a migrated template database, and a running stack."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack.services import resolve_services
from harness.stack import ForkServer, Stack, migrated_template, new_api_key, running_stack

_SERVICES = pytest.StashKey[contextlib.ExitStack]()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``), the controller resolves the services once, before its
    workers start, and hands them their URLs in the environment: every worker then shares one
    PostgreSQL and one Redis (each stack still gets a database and a key prefix of its own),
    instead of each starting embedded servers of its own."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    started = contextlib.ExitStack()
    state_dir = Path(tempfile.mkdtemp(prefix="switchboard-services-"))
    started.callback(shutil.rmtree, state_dir, True)
    services = started.enter_context(resolve_services(state_dir))
    config.stash[_SERVICES] = started
    os.environ["DATABASE_URL"] = services.database_url
    os.environ["REDIS_URL"] = services.redis_url


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_SERVICES, None)
    if started is not None:
        started.close()


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL): DATABASE_URL / REDIS_URL, checked (a configured
    server that does not answer fails the run; it is never skipped), else embedded servers."""
    with resolve_services(Path(tmp_path_factory.mktemp("services"))) as services:
        yield services.database_url, services.redis_url


@pytest.fixture(scope="session")
def template_database(service_urls: tuple[str, str]) -> Iterator[str]:
    """A database migrated to head, copied by every stack."""
    server_url, _ = service_urls
    with migrated_template(server_url) as name:
        yield name


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Starts every stack's API and workers with their packages already imported: the suite
    starts a few hundred of them (cli/stack/forkserver.py)."""
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def stack(
    service_urls: tuple[str, str],
    template_database: str,
    fork_server: ForkServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The shared stack: API, one worker on every queue, and beat ticking every second."""
    server_url, redis_url = service_urls
    with running_stack(
        server_url,
        template_database,
        redis_url,
        Path(tmp_path_factory.mktemp("stack")),
        sandbox={"fetch_twiml": True},
        fork_server=fork_server,
    ) as running:
        yield running


@pytest.fixture
def make_stack(
    service_urls: tuple[str, str],
    template_database: str,
    fork_server: ForkServer,
    tmp_path: Path,
) -> Iterator[Any]:
    """Start an extra, isolated stack (for tests that kill or reconfigure processes). Lighter
    than ``running_stack``'s defaults, as most tests need no more: no webhooks worker
    (``webhooks_worker=True`` for a test that sends webhooks) and beat inside the first worker
    (``embed_beat=False`` for a test that kills or stops that worker)."""
    server_url, redis_url = service_urls
    stacks: list[Any] = []

    def make(**kwargs: Any) -> Stack:
        kwargs.setdefault("webhooks_worker", False)
        kwargs.setdefault("embed_beat", True)
        kwargs.setdefault("fork_server", fork_server)
        context = running_stack(
            server_url, template_database, redis_url, tmp_path / f"stack{len(stacks)}", **kwargs
        )
        stacks.append(context)
        return context.__enter__()

    yield make
    for context in reversed(stacks):
        context.__exit__(None, None, None)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """``make_stack``'s broker arguments, once per broker: Redis (the stack's own key prefix),
    then RabbitMQ (a virtual host of its own on the machine's broker, which must be running).
    Requested before ``make_stack``, so the virtual host outlives the stack."""
    if request.param == "redis":
        yield {}
        return
    from tests.support import rabbitmq_vhost

    with rabbitmq_vhost() as url:
        yield {"broker_url": url}


@pytest.fixture
def api_key(stack: Stack) -> str:
    """An API key of a new workspace on the shared stack."""
    return new_api_key(stack)


@pytest.fixture
def client(stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    """An HTTP client of a new workspace on the shared stack."""
    with stack.client(api_key) as http:
        yield http
