"""Schemathesis over the API's own OpenAPI document, every check on: no server error, every
answer's status, content type, headers and body as documented, invalid input refused, valid
input taken. Run against a live API, once per way of sending the key (x-api-key on the
/v1/voiceai routes, Authorization: Bearer on the /v1/convai ones, which serve the same code)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")

# The two ways of sending the key, each over its half of the routes (/v1/voiceai and /v1/convai
# mount the same routers). The public and the /ai routes go with the first.
AUTH_STYLES = (
    ("x-api-key", "^(?!/v1/convai/)"),
    ("Authorization", "^/v1/convai/"),
)


@dataclass
class FuzzResult:
    """What the runs found: one line per run that failed, and schemathesis's reports."""

    failures: list[str]
    output: str


def fuzz_openapi(api_url: str, api_key: str, max_examples: int, workers: int = 1) -> FuzzResult:
    """Every check over every operation, ``max_examples`` generated cases per operation and
    phase, with each way of sending ``api_key``. One schemathesis worker by default: with two,
    their threads parse Python source at once, which CPython 3.11's AST constructor does not
    survive ("SystemError: AST constructor recursion depth mismatch", seen once in the
    suite)."""
    failures: list[str] = []
    outputs: list[str] = []
    for header, paths in AUTH_STYLES:
        value = f"Bearer {api_key}" if header == "Authorization" else api_key
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.ndjson"
            run = subprocess.run(
                [
                    str(SCHEMATHESIS),
                    "--config-file",
                    str(CONFIG),
                    "run",
                    f"{api_url}/openapi.json",
                    "--checks",
                    "all",
                    "--max-examples",
                    str(max_examples),
                    "--workers",
                    str(workers),
                    "--header",
                    f"{header}: {value}",
                    "--include-path-regex",
                    paths,
                    # Only the key given here: a generated one beside it would make the
                    # request's credentials ambiguous, and the auth checks meaningless.
                    "--generation-with-security-parameters",
                    "false",
                    # Nothing kept between runs (and no .schemathesis/ left in the checkout).
                    "--generation-database",
                    "none",
                    "--no-color",
                    "--seed",
                    "1",
                    "--report-ndjson-path",
                    str(report),
                    "--report",
                    "ndjson",
                ],
                cwd=tmp,  # whatever schemathesis keeps on disk stays out of the checkout
                capture_output=True,
                text=True,
                timeout=600,
            )
            outputs.append(run.stdout + run.stderr)
            if run.returncode != 0:
                failures.append(f"{header}: schemathesis exited {run.returncode}")
    return FuzzResult(failures, "\n".join(outputs))


if __name__ == "__main__":
    result = fuzz_openapi(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(result.output)
    print(json.dumps({"failures": result.failures}))
