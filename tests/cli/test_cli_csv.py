"""The batch commands of the real ``switchboard`` CLI, run as a subprocess against a stack."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import new_api_key
from tests.factories import create_agent, register_number
from tests.support import ROOT, Stack


def switchboard(
    stack: Stack, api_key: str | None, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_API")}
    env["SWITCHBOARD_API_URL"] = stack.api_url
    if api_key is not None:
        env["SWITCHBOARD_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_submit_watch_list_and_export(stack: Stack, tmp_path: Path):
    key = new_api_key(stack)
    with stack.client(key) as client:
        agent_id = create_agent(client)
        number_id = register_number(client)
    people = tmp_path / "people.csv"
    people.write_text(
        "\ufeffphone_number,id,first_name,amount\n"
        "+17185550801,c-1,Ada,$1\n"
        "17185550802,c-2,Grace,$2\n"
        "+17185550803,c-3,Alan,$3\n"
    )
    submitted = switchboard(
        stack,
        key,
        "submit",
        str(people),
        "--agent",
        agent_id,
        "--phone-number",
        number_id,
        "--name",
        "cli batch",
        "--watch",
    )
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    batch_id = lines[0]
    assert batch_id.startswith("batch")
    # Not a terminal: one plain progress line per poll, then the summary.
    assert any("scheduled 3" in line for line in lines[1:])
    assert f"Batch {batch_id} (cli batch): completed" in submitted.stdout
    assert "final:       3 of 3 recipients" in submitted.stdout

    listed = switchboard(stack, key, "batches", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if batch_id in line)
    assert "cli batch" in row and "completed" in row

    exported = switchboard(stack, key, "export", batch_id)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["recipient_id"] for r in rows] == ["c-1", "c-2", "c-3"]
    assert [r["phone_number"] for r in rows] == ["+17185550801", "+17185550802", "+17185550803"]
    assert all(r["status"] == "completed" and r["provider_call_sid"] for r in rows)

    watched = switchboard(stack, key, "watch", batch_id)
    assert watched.returncode == 0, watched.stderr
    assert f"Batch {batch_id} (cli batch): completed" in watched.stdout


def test_bad_csv_exits_1_naming_row_and_column(stack: Stack, tmp_path: Path):
    key = new_api_key(stack)
    with stack.client(key) as client:
        agent_id = create_agent(client)
        number_id = register_number(client)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "phone_number,first_name,amount\n"
        "+17185550811,Ada,$1\n"
        "not a number,Bob,$2\n"
        "+17185550813,Cy,\n"
    )
    result = switchboard(
        stack, key, "submit", str(bad), "--agent", agent_id, "--phone-number", number_id
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "row 3, column phone_number:" in result.stderr
    assert "row 4, column amount: no value for placeholder 'amount'" in result.stderr

    listed = switchboard(stack, key, "batches")
    assert listed.returncode == 0 and "no batches yet" in listed.stderr


def test_missing_key_and_unknown_batch_fail_clearly(stack: Stack):
    result = switchboard(stack, None, "batches")
    assert result.returncode == 1 and "SWITCHBOARD_API_KEY" in result.stderr
    result = switchboard(stack, new_api_key(stack), "export", "batch_nope")
    assert result.returncode == 1 and "batch 'batch_nope' not found" in result.stderr


def test_watch_on_a_terminal_draws_the_live_view(stack: Stack, tmp_path: Path):
    key = new_api_key(stack)
    with stack.client(key) as client:
        agent_id = create_agent(client)
        number_id = register_number(client)
    people = tmp_path / "people.csv"
    people.write_text("phone_number,first_name,amount\n+17185550821,Ada,$1\n")
    submitted = switchboard(
        stack, key, "submit", str(people), "--agent", agent_id, "--phone-number", number_id
    )
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_API")}
    env.update(SWITCHBOARD_API_URL=stack.api_url, SWITCHBOARD_API_KEY=key, COLUMNS="120")
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "watch", batch_id],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child closed the terminal
        while chunk := os.read(primary, 65536):
            output += chunk
    os.close(primary)
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "final recipients" in text and "1/1" in text
    assert f"Batch {batch_id} (people): completed" in text
