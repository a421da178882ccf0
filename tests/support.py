"""The stack the tests run against: the isolated stack of the launcher in ``cli.stack``, under
the names ``harness.stack`` gives it (the benchmarks import those too; nothing outside
``tests/`` imports from here), and what a fresh interpreter imports."""

import json
import subprocess
import sys

from harness.stack import *  # noqa: F403 - every name harness.stack exports
from harness.stack import __all__  # noqa: F401


def modules_after(imports: str) -> set[str]:
    """Every module a fresh interpreter holds once it has run ``import <imports>``."""
    code = f"import json, sys, {imports}; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(output))
