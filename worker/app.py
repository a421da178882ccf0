"""The Celery application: ``celery -A worker.app worker -Q batch-control,status,dial`` (and a
worker of its own for ``-Q webhooks``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from celery.signals import worker_init, worker_process_init, worker_ready

from shared import heap
from shared.db import reset_engine
from shared.errors import UnsafeSettings
from shared.messaging import declare_queues, make_celery
from shared.metrics import serve_worker_metrics
from shared.settings import get_settings, refuse_unsafe_start


def _celery_command() -> str | None:
    # `celery -A worker.app <command>` imports this module while its command line is parsed,
    # once the command (worker, beat, flower, ...) is known.
    context = click.get_current_context(silent=True)
    return context.invoked_subcommand if context is not None else None


# Every process started with this app (workers, beat, Flower) checks its settings before it
# does anything else; a refusal exits with status 1 and says which settings to set.
try:
    refuse_unsafe_start(get_settings(), flower=_celery_command() == "flower")
except UnsafeSettings as unsafe:
    sys.exit(f"switchboard: {unsafe}")

app = make_celery()
app.conf.imports = ("worker.tasks",)


@worker_process_init.connect
def _fresh_database_pool(**_: Any) -> None:
    # A forked pool child must not share the parent's database connections.
    reset_engine(close=False)


@worker_process_init.connect  # a forked pool child, once its database pool is fresh
@worker_ready.connect  # the worker itself (the threads pool runs the tasks in it)
def _settle_heap(**_: Any) -> None:
    heap.settle()


@worker_init.connect
def _declare_queues(**_: Any) -> None:
    # On RabbitMQ, the queues this worker does not consume, and the dead-letter queue, exist
    # from its start too, so that nothing sent to them or dead-lettered is dropped; and before
    # its consumer starts, which binds every queue's exchange for native delayed delivery.
    try:
        declare_queues()
    except Exception:
        # The broker is away: publishers declare what they send to, and the worker goes on to
        # wait for the broker as it always does.
        logging.getLogger(__name__).warning("could not declare the queues", exc_info=True)


@worker_init.connect
def _size_database_pool(sender: Any = None, **_: Any) -> None:
    # Every thread of the pool may hold a connection at once: the database pool is never
    # smaller than the worker's concurrency (-c), so no task waits for a connection.
    concurrency = int(getattr(sender, "concurrency", 0) or 0)
    settings = get_settings()
    if concurrency > settings.db_pool_size:
        settings.db_pool_size = concurrency
        reset_engine()


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    # Only without PROMETHEUS_MULTIPROC_DIR and with SWITCHBOARD_WORKER_METRICS_PORT set: the
    # worker's main process serves its registry (the threads pool records metrics there).
    serve_worker_metrics()


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
