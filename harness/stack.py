"""The stack the tests and the benchmarks run against: the isolated stack of the one launcher,
``cli.stack`` (``cli/stack/isolated.py``), under the names they import."""

from cli.stack.databases import create_database, drop_database
from cli.stack.forkserver import ForkServer
from cli.stack.isolated import (
    ALL_QUEUES,
    RABBITMQ_URL,
    RECOUNT,
    WEBHOOKS_QUEUE,
    Stack,
    migrated_template,
    new_api_key,
    running_stack,
)
from cli.stack.isolated import isolated_rabbitmq_vhost as rabbitmq_vhost
from cli.stack.net import PROJECT_ROOT as ROOT
from cli.stack.net import free_port, wait_for

__all__ = [
    "ALL_QUEUES",
    "RABBITMQ_URL",
    "RECOUNT",
    "ROOT",
    "WEBHOOKS_QUEUE",
    "ForkServer",
    "Stack",
    "create_database",
    "drop_database",
    "free_port",
    "migrated_template",
    "new_api_key",
    "rabbitmq_vhost",
    "running_stack",
    "wait_for",
]
