"""Gauges read from PostgreSQL and the broker at scrape time (the API's ``/metrics``); kept out
of ``shared.metrics``, which the provider adapters and the workers import to record."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import get_args

from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import messaging
from shared.batches import repository as batches_repo
from shared.db import transaction
from shared.dispatch import repository as calls_repo
from shared.schemas import BatchStatus
from shared.webhooks import repository as webhooks_repo


class SwitchboardCollector(Collector):
    """Gauges read from PostgreSQL and the broker at scrape time: one query per family."""

    def describe(self) -> Iterable[Metric]:
        # Describing without collecting keeps registration free of database reads.
        return [
            GaugeMetricFamily("switchboard_calls", "", labels=["status", "outcome"]),
            GaugeMetricFamily("switchboard_batches", "", labels=["status"]),
            GaugeMetricFamily("switchboard_queue_depth", "", labels=["queue"]),
            GaugeMetricFamily("switchboard_dead_lettered_messages", ""),
            GaugeMetricFamily("switchboard_webhook_deliveries_pending", ""),
            GaugeMetricFamily("switchboard_webhook_oldest_due_seconds", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        with transaction() as session:
            call_counts = calls_repo.count_by_status_and_outcome(session)
            batch_counts = batches_repo.count_by_status(session)
            webhook_backlog = webhooks_repo.pending_backlog(session)
        calls = GaugeMetricFamily(
            "switchboard_calls",
            "Calls by status and outcome (outcome empty while the call has none).",
            labels=["status", "outcome"],
        )
        for status, outcome, count in call_counts:
            calls.add_metric([status, outcome or ""], count)
        yield calls

        batches = GaugeMetricFamily("switchboard_batches", "Batches by status.", labels=["status"])
        # Every status is exported, zero included, so a series never disappears.
        for status in get_args(BatchStatus):
            batches.add_metric([status], batch_counts.get(status, 0))
        yield batches

        depths = GaugeMetricFamily(
            "switchboard_queue_depth",
            "Messages waiting in each Celery queue (not those a worker holds).",
            labels=["queue"],
        )
        for queue, length in messaging.queue_lengths(messaging.QUEUES).items():
            depths.add_metric([queue], length)
        yield depths

        yield GaugeMetricFamily(
            "switchboard_webhook_deliveries_pending",
            "Webhook deliveries not yet delivered nor failed for good (due now or later).",
            value=webhook_backlog.pending,
        )
        yield GaugeMetricFamily(
            "switchboard_webhook_oldest_due_seconds",
            "How long the pending webhook delivery due the longest has been due (0 when none "
            "is): grows while the webhooks workers fall behind.",
            value=webhook_backlog.oldest_due_s,
        )

        # Only RabbitMQ dead-letters: on Redis the family is left out rather than stuck at 0.
        dead_lettered = messaging.dead_lettered()
        if dead_lettered is not None:
            yield GaugeMetricFamily(
                "switchboard_dead_lettered_messages",
                "Messages in the dead-letter queue: delivered the broker's delivery limit of "
                "times without being acknowledged (their worker died on each).",
                value=dead_lettered,
            )
