"""The Celery application's configuration and publishing by task name.

The API and the services publish through this module only, by task name, so ``api/`` never
imports ``worker/``. Messages carry ids and plain JSON values, never ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import redis
from amqp.exceptions import NotFound
from celery import Celery
from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher
from kombu import Connection, Exchange, Queue
from kombu.transport.redis import PRIORITY_STEPS
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
# RabbitMQ only: where a message goes once it has been delivered broker_delivery_limit times
# without being acknowledged (its worker died on it each time). Nothing consumes it.
QUEUE_DEAD_LETTER = "dead_letter"
# RabbitMQ only: a queue that holds nothing and exists only as long as the broker kept its
# state; its absence means the broker lost every message (broker_restarted).
BROKER_MARKER_QUEUE = "broker-marker"
# How long a depth read or the readiness check waits for the broker to answer.
BROKER_TIMEOUT_S = 5.0
# kombu's Redis transport keeps a message of priority p > 0 in a list of its own, named
# queue + "\x06\x16" + p; every one of them is counted in a queue's depth.
_REDIS_PRIORITY_SEPARATOR = "\x06\x16"

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
    transport_options: dict[str, Any]
    if settings.broker_is_rabbitmq:
        # Publisher confirms: a publish returns once RabbitMQ has the message, so one that
        # returned without error is not lost with a connection dropped just after it.
        transport_options = {"confirm_publish": True}
    else:
        transport_options = {
            "visibility_timeout": settings.visibility_timeout_s,
            "global_keyprefix": settings.redis_key_prefix,
            "queue_order_strategy": "priority",
        }
    return {
        "broker_url": settings.broker_url,
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
        "task_queues": task_queues(settings),
        "task_default_queue": QUEUE_BATCH_CONTROL,
        # A queue nobody listed is never made up on the fly (it would be classic, without
        # the arguments task_queues gives every queue on RabbitMQ).
        "task_create_missing_queues": False,
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


def task_queues(settings: Settings) -> list[Queue]:
    """Every queue, as publishers and workers declare it.

    Each queue has its own exchange and routing key. A bare Queue(name) would be bound to the
    default queue's exchange and key, and one message routed by name would land in every
    queue. On RabbitMQ the queues are quorum queues (replicated, durable, and able to count
    deliveries), a message delivered ``broker_delivery_limit`` times goes to the dead-letter
    queue, and the exchanges are topic exchanges, so that Celery's native delayed delivery
    (which quorum queues call for) carries a retry's countdown instead of the worker holding it.
    """
    if not settings.broker_is_rabbitmq:
        return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
    dead_letter = Exchange(QUEUE_DEAD_LETTER, type="topic")
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.broker_delivery_limit,
        "x-dead-letter-exchange": dead_letter.name,
        "x-dead-letter-routing-key": QUEUE_DEAD_LETTER,
    }
    return [
        *(
            Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
            for name in QUEUES
        ),
        Queue(
            QUEUE_DEAD_LETTER,
            dead_letter,
            routing_key=QUEUE_DEAD_LETTER,
            queue_arguments={"x-queue-type": "quorum"},
        ),
    ]


class UnconfirmedEventDispatcher(EventDispatcher):
    """Celery's event dispatcher, publishing without publisher confirms.

    Task and worker events are best effort (Flower's view), and on RabbitMQ ``confirm_publish``
    reached them too, through the worker's write connection. A confirm wait has no timeout
    and holds the dispatcher's lock, which the worker's consumer loop takes to flush events:
    under a backlog of 10,000 dial messages a wait that never ended stopped the dial worker
    for good, 16 messages unacknowledged (bench/status_latency.py). Task messages keep their
    confirms.
    """

    def __init__(self, connection: Connection | None = None, *args: Any, **kwargs: Any) -> None:
        options = dict(connection.transport_options or {}) if connection is not None else {}
        if connection is not None and options.pop("confirm_publish", False):
            # A lazy connection: the worker made it for the dispatcher and never opened it.
            connection = connection.clone(transport_options=options)
        super().__init__(connection, *args, **kwargs)


class SwitchboardEvents(Events):
    """Celery's events, with the dispatcher above."""

    dispatcher_cls = UnconfirmedEventDispatcher


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from settings (tasks are registered by ``worker/``)."""
    app = Celery("switchboard", events=SwitchboardEvents)
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
    # On RabbitMQ a message sent to a queue nobody declared yet would be dropped: the queue
    # (with its arguments) and the dead-letter queue it hands messages on to are declared
    # first, once per producer channel. The Redis transport needs nothing declared.
    declare = (
        [app.amqp.queues[queue], app.amqp.queues[QUEUE_DEAD_LETTER]]
        if get_settings().broker_is_rabbitmq
        else None
    )
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
                declare=declare,
                **message.properties,
            )
            sent += 1
    return sent


def declare_queues() -> None:
    """Declare every queue and the dead-letter queue on RabbitMQ (a worker declares only the
    queues it consumes); nothing on Redis, whose queues need no declaring."""
    if not get_settings().broker_is_rabbitmq:
        return
    app = get_app()
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()


def broker_restarted() -> bool:
    """Whether the broker lost its state since this was last asked (it restarted empty): its
    marker (a Redis key, or a RabbitMQ queue) was missing, and is set now. True on a new
    deployment's first ask as well."""
    settings = get_settings()
    if settings.broker_is_rabbitmq:
        return _rabbitmq_marker_was_missing(settings)
    client = redis.Redis.from_url(settings.broker_url)
    try:
        return bool(client.set(settings.redis_key_prefix + "broker-marker", "1", nx=True))
    finally:
        client.close()


def _rabbitmq_marker_was_missing(settings: Settings) -> bool:
    # A quorum queue outlives a restart of RabbitMQ (and of any one node of a cluster): it is
    # gone only when the broker's state is, and every message with it. Two ticks that both
    # find it missing both re-drive, which the re-drive's claims make harmless.
    with _rabbitmq_connection(settings) as connection:
        channel = connection.channel()
        try:
            channel.queue_declare(queue=BROKER_MARKER_QUEUE, passive=True)
            return False
        except NotFound:
            channel = connection.channel()
            channel.queue_declare(
                queue=BROKER_MARKER_QUEUE,
                durable=True,
                auto_delete=False,
                arguments={"x-queue-type": "quorum"},
            )
            return True


def queue_length(queue: str) -> int:
    """Messages waiting in ``queue`` (not counting those a worker holds unacknowledged)."""
    return queue_lengths([queue])[queue]


def queue_lengths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues``, on whichever broker is in use: on Redis the
    lengths of each queue's lists, read in one pipelined round trip; on RabbitMQ the message
    count of a passive declare of each (no management plugin needed). Messages a worker holds
    unacknowledged are counted by neither; a queue never declared holds nothing."""
    settings = get_settings()
    names = list(queues)
    if settings.broker_is_rabbitmq:
        return _rabbitmq_queue_lengths(settings, names)
    return _redis_queue_lengths(settings, names)


def _redis_queue_lengths(settings: Settings, names: list[str]) -> dict[str, int]:
    lists = {
        queue: [
            settings.redis_key_prefix
            + (f"{queue}{_REDIS_PRIORITY_SEPARATOR}{step}" if step else queue)
            for step in PRIORITY_STEPS
        ]
        for queue in names
    }
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=BROKER_TIMEOUT_S)
    try:
        with client.pipeline(transaction=False) as pipeline:
            for keys in lists.values():
                for key in keys:
                    pipeline.llen(key)
            lengths = iter(pipeline.execute())
    finally:
        client.close()
    return {queue: sum(int(next(lengths)) for _ in keys) for queue, keys in lists.items()}


def _rabbitmq_queue_lengths(settings: Settings, names: list[str]) -> dict[str, int]:
    lengths: dict[str, int] = {}
    with _rabbitmq_connection(settings) as connection:
        channel = connection.channel()
        for queue in names:
            try:
                lengths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except NotFound:
                # Nothing was ever published to it (publishers declare the queue first). The
                # broker closed the channel over the miss; the next queue needs another.
                lengths[queue] = 0
                channel = connection.channel()
    return lengths


def _rabbitmq_connection(settings: Settings) -> Connection:
    # A connection of its own, not one of the publishing pool's: a passive declare of a queue
    # that does not exist closes its channel, and a broker that does not answer must fail the
    # read within BROKER_TIMEOUT_S rather than be retried.
    return Connection(
        settings.broker_url,
        connect_timeout=BROKER_TIMEOUT_S,
        transport_options={
            "read_timeout": BROKER_TIMEOUT_S,
            "write_timeout": BROKER_TIMEOUT_S,
        },
    )


def broker_readiness() -> str:
    """Whether the broker in use answers, in /readyz's words: "ok", or "error: <exception
    class>". It connects and reads every queue's depth (a passive declare on RabbitMQ)."""
    try:
        queue_lengths(QUEUES)
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return "ok"


def dead_lettered() -> int | None:
    """Messages in the dead-letter queue, or None when the broker has none (Redis)."""
    if not get_settings().broker_is_rabbitmq:
        return None
    return queue_length(QUEUE_DEAD_LETTER)
