"""Schemathesis over the API's OpenAPI document, at depth: every check, at least 100 generated
examples per operation and phase, with the key in x-api-key and in Authorization: Bearer.

    python bench/fuzz_openapi.py [--examples 100]

Starts the API alone on a fresh database (harness/openapi_fuzz.py runs schemathesis; the test in
tests/api/test_openapi_fuzz.py runs the same with 5 examples). Prints schemathesis's summaries
and the failures; docs/BENCHMARKS.md has the last result.

Uses DATABASE_URL / REDIS_URL when set, else embedded servers started here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch import _migrated_template, _services  # noqa: E402
from harness.openapi_fuzz import fuzz_openapi  # noqa: E402
from harness.stack import (  # noqa: E402
    new_api_key,
    running_stack,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    args = parser.parse_args()
    with ExitStack() as resources:
        state = Path(resources.enter_context(tempfile.TemporaryDirectory()))
        server_url, redis_url, _ = _services(resources, state)
        template = _migrated_template(resources, server_url)
        stack = resources.enter_context(
            running_stack(
                server_url, template, redis_url, state / "stack", beat=False, webhooks_worker=False
            )
        )
        started = time.perf_counter()
        result = fuzz_openapi(stack.api_url, new_api_key(stack), args.examples)
        print(result.output)
        print(
            f"{args.examples} examples per operation and phase, both ways of sending the key, "
            f"in {time.perf_counter() - started:.0f} s: failures {len(result.failures)}"
        )


if __name__ == "__main__":
    main()
