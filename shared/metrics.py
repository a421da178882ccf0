"""Prometheus metrics: the instruments workers record, and the registry the API serves (with
the gauges of ``shared.gauges``, computed per scrape).

Worker metrics live in the worker's process. With ``PROMETHEUS_MULTIPROC_DIR`` set (the dev
stack, the Procfile and docker-compose set it) every process writes its samples to files in
that directory and the API's ``/metrics`` aggregates them; otherwise a worker serves its own
registry on ``SWITCHBOARD_WORKER_METRICS_PORT``. Recording is an in-memory (or mmap) write:
no database or Redis round trip is added to any call. This module imports no SQL: the
provider adapters record here.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared.errors import ProviderError
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory every process writes its samples to, when multiprocess mode is on."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


# Sample files are named by process. Containers sharing the directory (the API and every
# worker in docker-compose) each run as pid 1, so the host name is part of the name too;
# prometheus_client splits file names on "_", hence none in it.
_HOST = socket.gethostname().replace("_", "-")


def _process_identifier() -> str:
    # Asked on every recorded sample (to notice a fork): the pid is read each time.
    return f"{_HOST}-{os.getpid()}"


if multiprocess_dir() is not None:
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

# The provider request of a dial takes tens of milliseconds to a few seconds (with the SDK's
# own resends of requests that were not processed, up to 4 tries of provider_timeout_s).
DIAL_SECONDS = Histogram(
    "switchboard_dial_seconds",
    "Time of the provider request that places a call, by its result.",
    ["result"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
DIALS = Counter(
    "switchboard_dials",
    "Dial tasks by what happened; result=dispatched counts calls the provider accepted.",
    ["result"],
)
PROVIDER_ERRORS = Counter(
    "switchboard_provider_errors",
    "Failed provider requests, resent ones included, by provider error code.",
    ["code"],
)
PACING_WAIT_SECONDS = Histogram(
    "switchboard_pacing_wait_seconds",
    "How long a dial waited for its pacing slot (reserved slots only).",
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
STATUS_CALLBACKS = Counter(
    "switchboard_status_callbacks",
    "Provider status callbacks and machine-detection verdicts stored in the status inbox.",
)
PACING_HANDED_BACK = Counter(
    "switchboard_pacing_handed_back",
    "Calls handed back to pending because their pacing slot was further than the longest sleep.",
)

# Dial results of the provider request itself (the result label of DIAL_SECONDS).
DIAL_ACCEPTED = "accepted"


def dial_error_result(error: ProviderError) -> str:
    """The result label of a provider request that failed, from how the error is handled."""
    if error.auth_failed:
        return "auth_failed"
    if error.ambiguous:
        return "ambiguous"
    if error.retryable:
        return "not_processed"
    return "rejected"


def provider_error_code(error: ProviderError) -> str:
    """A bounded label for a provider error: its code, else its HTTP status, else its kind."""
    if error.code is not None:
        return str(error.code)
    if error.status is not None:
        return f"http_{error.status}"
    return "ambiguous" if error.ambiguous else "unreachable"


@lru_cache(maxsize=1)
def scrape_registry() -> CollectorRegistry:
    """What the API's /metrics serves: the gauges above, plus every process's samples from
    the multiprocess directory when it is set (else this process's own metrics)."""
    # Imported here: the gauges read the database, and this module is imported by code that
    # must not pull SQL in (the provider adapters record their errors here).
    from shared.gauges import SwitchboardCollector

    if multiprocess_dir() is None:
        from prometheus_client import REGISTRY

        REGISTRY.register(SwitchboardCollector())
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(SwitchboardCollector())
    return registry


def render_metrics() -> bytes:
    """The text exposition of :func:`scrape_registry`."""
    return generate_latest(scrape_registry())


def serve_worker_metrics(settings: Settings | None = None) -> int | None:
    """Serve this worker process's metrics on the configured port, unless the multiprocess
    directory is in use (the API serves them then) or no port is set; the port, or None."""
    settings = settings or get_settings()
    if multiprocess_dir() is not None or not settings.worker_metrics_port:
        return None
    start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    log.info(
        "worker metrics on http://%s:%d/metrics",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )
    return settings.worker_metrics_port


WEBHOOK_DELIVERIES_DEFERRED = Counter(
    "switchboard_webhook_deliveries_deferred",
    "Webhook deliveries put back for later without an attempt, by reason: breaker_open, "
    "breaker_probing (another delivery probes the endpoint), endpoint_busy, workspace_busy "
    "(its limit of deliveries in flight is reached).",
    ["reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "switchboard_webhook_attempts",
    "Webhook delivery attempts by result: delivered (a 2xx), failed (another status, no "
    "answer, or a refused destination; due again after a backoff until its window closes).",
    ["result"],
)
