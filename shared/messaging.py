"""The Celery application's configuration and publishing by task name.

The API and the services publish through this module only, by task name, so ``api/`` never
imports ``worker/``. Messages carry ids and plain JSON values, never ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue
from kombu.utils.uuid import uuid

from shared.settings import Settings, get_settings

QUEUE_BATCH_CONTROL = "batch-control"
QUEUE_DIAL = "dial"
QUEUE_STATUS = "status"
QUEUE_WEBHOOKS = "webhooks"
# In priority order: a worker consuming several queues takes a message from the first one that
# has any (queue_order_strategy "priority"), so status reports, which free live-call slots, are
# never stuck behind a long dial queue.
QUEUES = (QUEUE_BATCH_CONTROL, QUEUE_STATUS, QUEUE_WEBHOOKS, QUEUE_DIAL)

TASK_START_BATCH = "batches.start"
TASK_TICK = "batches.tick"
TASK_DIAL = "calls.dial"
TASK_DIAL_MANY = "calls.dial_many"
TASK_APPLY_STATUSES = "calls.apply_statuses"
# One report per message, as published before reports were gathered; still consumed.
TASK_APPLY_STATUS = "calls.apply_status"
TASK_RECONCILE = "calls.reconcile"
TASK_HANG_UP = "calls.hang_up"
TASK_ANSWER_MACHINE = "calls.answer_machine"
TASK_DELIVER_WEBHOOK = "webhooks.deliver"
# Does nothing: the benchmark measures how fast workers drain plain messages with it.
TASK_NOOP = "system.noop"

TASK_QUEUES = {
    TASK_START_BATCH: QUEUE_BATCH_CONTROL,
    TASK_TICK: QUEUE_BATCH_CONTROL,
    TASK_DIAL: QUEUE_DIAL,
    TASK_DIAL_MANY: QUEUE_DIAL,
    TASK_APPLY_STATUSES: QUEUE_STATUS,
    TASK_APPLY_STATUS: QUEUE_STATUS,
    TASK_RECONCILE: QUEUE_STATUS,
    TASK_HANG_UP: QUEUE_STATUS,
    TASK_ANSWER_MACHINE: QUEUE_STATUS,
    TASK_DELIVER_WEBHOOK: QUEUE_WEBHOOKS,
    TASK_NOOP: QUEUE_DIAL,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by every process that publishes or consumes."""
    transport_options = {
        "visibility_timeout": settings.visibility_timeout_s,
        "global_keyprefix": settings.redis_key_prefix,
        "queue_order_strategy": "priority",
    }
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport_options,
        # No result backend is used; the option is set anyway so that the visibility timeout
        # is the same wherever Celery reads one.
        "result_backend_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        # Task events cost three Redis publishes per task; workers watched in Flower send them
        # with -E (as `make run`, the Procfile and docker-compose start them).
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # Each queue has its own exchange and routing key. A bare Queue(name) would be bound to
        # the default queue's exchange and key, and one message routed by name would land in
        # every queue.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_default_queue": QUEUE_BATCH_CONTROL,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "tick": {
                "task": TASK_TICK,
                "schedule": settings.tick_interval_s,
                # A tick nobody took in time is worthless: the next one does the same work.
                "options": {"expires": max(settings.tick_interval_s * 2, 2.0)},
            }
        },
    }


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from settings (tasks are registered by ``worker/``)."""
    app = Celery("switchboard")
    app.conf.update(celery_config(settings or get_settings()))
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The process-wide Celery app used for publishing."""
    return make_celery()


def publish(task_name: str, args: Sequence[Any]) -> None:
    """Send one task message by name to its queue."""
    publish_many(task_name, [args])


def publish_many(task_name: str, arg_lists: Iterable[Sequence[Any]], chunk_size: int = 1000) -> int:
    """Send many messages of one task over one producer, pipelined; returns the count.

    ``send_task`` per message costs about 0.4 ms of Celery bookkeeping plus a Redis round trip;
    building the protocol-2 message directly and letting ``Producer.batch()`` pipeline the
    LPUSHes publishes 10,000 dial messages in about 1.5 s on a 2-core machine. Messages are
    flushed every ``chunk_size``, so workers start on the first chunk while the rest follow.
    """
    app = get_app()
    queue = TASK_QUEUES[task_name]
    sent = 0
    # The producer pool keeps the Redis connection between calls (the API publishes one status
    # report per request).
    with app.producer_pool.acquire(block=True) as producer, producer.batch(max_size=chunk_size):
        for args in arg_lists:
            message = app.amqp.as_task_v2(uuid(), task_name, args=list(args), kwargs={})
            producer.publish(
                message.body,
                exchange="",
                routing_key=queue,
                headers=message.headers,
                serializer="json",
                retry=True,
                **message.properties,
            )
            sent += 1
    return sent


def broker_restarted() -> bool:
    """Whether the broker lost its state since this was last asked (it restarted empty): a
    marker key was missing, and is set now. True on a new deployment's first ask as well."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return bool(client.set(settings.redis_key_prefix + "broker-marker", "1", nx=True))
    finally:
        client.close()


def queue_length(queue: str) -> int:
    """Messages waiting in ``queue`` (not counting those a worker holds unacknowledged)."""
    return queue_lengths([queue])[queue]


def queue_lengths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues``, read in one pipelined round trip."""
    settings = get_settings()
    names = list(queues)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with client.pipeline(transaction=False) as pipeline:
            for queue in names:
                pipeline.llen(settings.redis_key_prefix + queue)
            lengths = pipeline.execute()
    finally:
        client.close()
    return {queue: int(length) for queue, length in zip(names, lengths, strict=True)}
