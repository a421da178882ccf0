"""Routing: every task name lands in exactly its own queue, on the real Redis broker."""

from __future__ import annotations

import uuid

import redis

from shared.messaging import QUEUES, TASK_QUEUES, make_celery
from shared.settings import Settings


def test_each_task_lands_in_exactly_its_queue(service_urls):
    _, redis_url = service_urls
    prefix = f"routing-{uuid.uuid4().hex[:8]}:"
    settings = Settings.model_validate({"REDIS_URL": redis_url, "redis_key_prefix": prefix})
    app = make_celery(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        with app.connection_for_write() as connection:
            for queue in app.amqp.queues.values():  # bind them as a worker does
                queue(connection.default_channel).declare()
        for task_name, queue in TASK_QUEUES.items():
            app.send_task(task_name, args=[])  # routed by name, as beat sends the tick
            lengths = {q: client.llen(prefix + q) for q in QUEUES}
            assert lengths == {q: int(q == queue) for q in QUEUES}, task_name
            client.delete(prefix + queue)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def test_calls_are_grouped_into_dial_messages_but_spread_over_at_least_64():
    from shared.dispatch.fan_out import dial_groups

    ids = [f"call_{i}" for i in range(700)]
    assert dial_groups(ids[:5]) == [[i] for i in ids[:5]]
    assert [len(g) for g in dial_groups(ids[:200])] == [3] * 66 + [2]
    groups = dial_groups(ids)
    assert [len(g) for g in groups] == [10] * 70
    assert [i for g in groups for i in g] == ids


def test_on_rabbitmq_task_events_go_without_confirms_and_task_messages_with_them():
    # A confirm wait holds the event dispatcher's lock, which the worker's consumer loop needs
    # too: one that never ended stopped a dial worker under a backlog. Events are best effort.
    settings = Settings.model_validate(
        {"SWITCHBOARD_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}
    )
    app = make_celery(settings)
    write = app.connection_for_write()
    assert write.transport_options["confirm_publish"] is True
    dispatcher = app.events.Dispatcher(write, enabled=False)
    assert "confirm_publish" not in dispatcher.connection.transport_options
    assert dispatcher.connection.as_uri() == write.as_uri()
    # Task messages (the producer pool publish_many and Celery's sends use) keep them.
    with app.producer_pool.acquire(block=False) as producer:
        assert producer.connection.transport_options["confirm_publish"] is True
