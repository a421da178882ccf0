"""The fork server the tests start their stacks' processes from: a child runs ``python -m`` as
a process of its own would (environment, directory, output, exit code, session), and nothing
that reads the child's environment on import is imported before the child has it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack.forkserver import ForkServer

# What the child prints: its environment, directory, path head, session, and whether the
# packages that must be imported with its environment were already there.
_REPORT = """
import os, sys
print(os.environ.get("SB_PROBE"), os.getcwd(), sys.path[0] == os.getcwd(),
      os.getsid(0) == os.getpid(), "prometheus_client" in sys.modules, "shared" in sys.modules,
      "celery" in sys.modules)
sys.exit(int(os.environ.get("SB_EXIT", "0")))
"""


@pytest.fixture
def server() -> Iterator[ForkServer]:
    forks = ForkServer()
    yield forks
    forks.close()


def _probe_module(tmp_path: Path) -> Path:
    (tmp_path / "sb_probe.py").write_text(_REPORT)
    return tmp_path


def test_child_runs_the_module_with_its_own_environment_directory_and_output(
    server: ForkServer, tmp_path: Path
) -> None:
    cwd = _probe_module(tmp_path)
    output = tmp_path / "probe.log"
    child = server.spawn(
        [sys.executable, "-m", "sb_probe"],
        env={**os.environ, "SB_PROBE": "given", "SB_EXIT": "3"},
        cwd=cwd,
        output=output,
    )
    assert child.wait(timeout=10) == 3
    # Its own session; the module found on the working directory, as ``python -m`` has it; the
    # packages preloaded, but none that reads the environment on import.
    assert output.read_text().split() == [
        "given", str(cwd), "True", "True", "False", "False", "True"
    ]  # fmt: skip


def test_exit_by_signal_reads_as_popen_does_and_children_are_independent(
    server: ForkServer, tmp_path: Path
) -> None:
    sleeper = server.spawn(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
        env=dict(os.environ),
        cwd=tmp_path,
        output=tmp_path / "server.log",
    )
    cwd = _probe_module(tmp_path)
    quick = server.spawn(
        [sys.executable, "-m", "sb_probe"], env=dict(os.environ), cwd=cwd, output=tmp_path / "q"
    )
    assert quick.wait(timeout=10) == 0
    assert sleeper.poll() is None
    os.killpg(sleeper.pid, signal.SIGKILL)
    assert sleeper.wait(timeout=10) == -signal.SIGKILL


def test_only_python_m_commands_of_this_interpreter_are_served(server: ForkServer) -> None:
    assert server.serves([sys.executable, "-m", "celery", "worker"])
    assert not server.serves(["/usr/bin/env", "-m", "celery"])
    assert not server.serves([sys.executable, "script.py"])
    with pytest.raises(ValueError):
        server.spawn(["redis-server"], env={}, cwd=Path("/"), output=Path(os.devnull))
