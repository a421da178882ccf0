"""The one stack launcher: ``switchboard run`` and ``make demo`` (``launch_stack``), the tests
and the benchmarks (``running_stack``, an isolated ``Stack``) start their processes through it.

- ``net``: loopback ports, waiting for a condition or an HTTP answer, the API's JSON client;
- ``databases`` / ``embedded`` / ``services``: the database and Redis of DATABASE_URL /
  REDIS_URL or embedded ones, the broker, a RabbitMQ virtual host of a stack's own;
- ``processes``: the supervisor every process runs under, and stopping on signals;
- ``commands``: the command line and the environment of each process;
- ``launcher``: the dev stack; ``isolated``: a stack on a private database and key prefix.
"""

from cli.stack.commands import StackPorts, stack_commands, worker_node, worker_processes
from cli.stack.databases import check_database, create_database, drop_database
from cli.stack.embedded import (
    EmbeddedServer,
    running_dev_database_url,
    start_embedded_postgres,
    start_embedded_redis,
)
from cli.stack.isolated import (
    RABBITMQ_URL,
    RECOUNT,
    Stack,
    isolated_rabbitmq_vhost,
    migrated_template,
    new_api_key,
    running_stack,
)
from cli.stack.launcher import (
    DevWorkspace,
    RunningStack,
    launch_private_stack,
    launch_stack,
)
from cli.stack.net import (
    LOCALHOST,
    PROJECT_ROOT,
    ApiClient,
    ApiError,
    ServiceUnavailable,
    free_port,
    pid_alive,
    port_in_use,
    redact_url,
    wait_for,
    wait_http,
)
from cli.stack.processes import ChildDied, ProcessSupervisor, StopRequested, stop_on_signals
from cli.stack.services import (
    BROKER_URL_VARIABLES,
    Services,
    check_rabbitmq,
    check_redis,
    configured_broker_url,
    rabbitmq_vhost,
    resolve_services,
)

__all__ = [
    "BROKER_URL_VARIABLES",
    "LOCALHOST",
    "PROJECT_ROOT",
    "RABBITMQ_URL",
    "RECOUNT",
    "ApiClient",
    "ApiError",
    "ChildDied",
    "DevWorkspace",
    "EmbeddedServer",
    "ProcessSupervisor",
    "RunningStack",
    "ServiceUnavailable",
    "Services",
    "Stack",
    "StackPorts",
    "StopRequested",
    "check_database",
    "check_rabbitmq",
    "check_redis",
    "configured_broker_url",
    "create_database",
    "drop_database",
    "free_port",
    "isolated_rabbitmq_vhost",
    "launch_private_stack",
    "launch_stack",
    "migrated_template",
    "new_api_key",
    "pid_alive",
    "port_in_use",
    "rabbitmq_vhost",
    "redact_url",
    "resolve_services",
    "running_dev_database_url",
    "running_stack",
    "stack_commands",
    "start_embedded_postgres",
    "start_embedded_redis",
    "stop_on_signals",
    "wait_for",
    "wait_http",
    "worker_node",
    "worker_processes",
]
