"""The stack the tests run against: the isolated stack of the launcher in ``cli.stack``, under
the names ``harness.stack`` gives it (the benchmarks import those too; nothing outside
``tests/`` imports from here)."""

from harness.stack import *  # noqa: F403 - every name harness.stack exports
from harness.stack import __all__  # noqa: F401
