"""The stack harness the tests run against; it lives in ``harness.stack``, which the benchmarks
use too (nothing outside ``tests/`` imports from it)."""

from harness.stack import (
    ALL_QUEUES,
    RABBITMQ_URL,
    RECOUNT,
    ROOT,
    WEBHOOKS_QUEUE,
    Stack,
    create_database,
    drop_database,
    free_port,
    new_api_key,
    rabbitmq_vhost,
    running_stack,
    wait_for,
)

__all__ = [
    "ALL_QUEUES",
    "RABBITMQ_URL",
    "RECOUNT",
    "ROOT",
    "WEBHOOKS_QUEUE",
    "Stack",
    "create_database",
    "drop_database",
    "free_port",
    "new_api_key",
    "rabbitmq_vhost",
    "running_stack",
    "wait_for",
]
