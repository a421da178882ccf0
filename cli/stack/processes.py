"""The process supervisor every stack runs its processes under: each child in a process group
of its own, its output prefixed on the console or written to a log file, all stopped together;
and the signal handling of a stack run in the foreground."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Protocol, TextIO

from cli.stack.forkserver import ForkServer
from cli.stack.net import STARTUP_TIMEOUT_S, wait_http

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How many of a child's last output lines are kept (and read back from its log file).
KEPT_LINES = 2000
_COLORS = ("36", "33", "35", "32", "34", "31")


class StopRequested(Exception):
    """A signal asked the stack to stop; raised from the supervisor's polling, never mid-cleanup."""


class ChildDied(RuntimeError):
    """A supervised process exited while it was supposed to be running."""

    def __init__(self, name: str, returncode: int, last_lines: Sequence[str]) -> None:
        tail = "\n".join(f"    {line}" for line in last_lines)
        super().__init__(
            f"process '{name}' exited unexpectedly with code {returncode}"
            + (f"; its last output:\n{tail}" if tail else "")
        )
        self.name = name
        self.returncode = returncode


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """While active, SIGINT/SIGTERM/SIGHUP set ``stop_event`` instead of killing the process."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # Only set the flag: raising here could interrupt a shutdown already under way, and
        # the shutdown is bounded (SIGKILL after the grace period), so repeats are ignored.
        if not stop_event.is_set():
            print(
                f"\n{signal.Signals(signum).name} received; stopping", file=sys.stderr, flush=True
            )
        stop_event.set()

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``, if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class ChildProcess(Protocol):
    """A started child: a ``subprocess.Popen``, or a ``ForkedProcess`` of a fork server."""

    pid: int
    returncode: int | None
    # Its output, when it is read from a pipe (a child without a log file).
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def _popen(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None, log_path: Path | None
) -> subprocess.Popen[bytes]:
    """``argv`` in a new session, writing to ``log_path``, or to a pipe without one."""
    with contextlib.ExitStack() as opened:
        output: int | TextIO = subprocess.PIPE
        if log_path is not None:
            # The child holds the file from here on; ours is closed once it runs.
            output = opened.enter_context(log_path.open("a", encoding="utf-8"))
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # A new session makes the child a group leader, so stop() can signal the child and
            # everything it spawned at once, and the terminal's Ctrl-C reaches only us: we
            # decide the order of shutdown.
            start_new_session=True,
        )


@dataclass
class _Child:
    name: str
    popen: ChildProcess
    log_path: Path | None
    lines: deque[str]
    lock: threading.Lock
    reader: threading.Thread | None = None


class ProcessSupervisor:
    """Runs named child processes, each in its own process group, and stops them together.

    With a log directory each child writes straight to ``log_dir/NAME.log`` (appended to);
    without one, a thread prefixes its lines with its name on the console. Signal handlers
    only set ``stop_event``; the polling methods turn it into StopRequested, so a signal never
    interrupts a shutdown. A name is free again once its child has exited (a restart). With a
    ``fork_server`` (and a log directory), ``python -m`` commands start as its children.
    """

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        stop_timeout: float = 10.0,
        console: TextIO | None = None,
        stop_event: threading.Event | None = None,
        fork_server: ForkServer | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.fork_server = fork_server
        self.stop_event = stop_event
        self.stop_timeout = stop_timeout
        self.console = console if console is not None else sys.stdout
        self._children: list[_Child] = []
        self._console_lock = threading.Lock()
        self._stopping = False
        self._color = bool(getattr(self.console, "isatty", lambda: False)())

    # -- starting ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ChildProcess:
        """Start ``argv`` as child ``name`` in a new session (its own process group)."""
        for earlier in [child for child in self._children if child.name == name]:
            if earlier.popen.poll() is None:
                raise ValueError(f"a child named {name!r} is already running")
            if earlier.reader is not None:
                earlier.reader.join(timeout=2.0)
            self._children.remove(earlier)
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
        popen: ChildProcess
        if log_path is not None and self.fork_server is not None and self.fork_server.serves(argv):
            popen = self.fork_server.spawn(
                argv,
                env=env if env is not None else os.environ,
                cwd=cwd if cwd is not None else Path.cwd(),
                output=log_path,
            )
        else:
            popen = _popen(argv, env, cwd, log_path)
        child = _Child(name, popen, log_path, deque(maxlen=KEPT_LINES), threading.Lock())
        if log_path is None:
            child.reader = threading.Thread(
                target=self._pump, args=(child, len(self._children)), name=f"pump-{name}"
            )
            child.reader.daemon = True
            child.reader.start()
        self._children.append(child)
        return popen

    def _pump(self, child: _Child, index: int) -> None:
        assert child.popen.stdout is not None
        prefix = f"{child.name:>8} | "
        if self._color:
            prefix = f"\x1b[{_COLORS[index % len(_COLORS)]}m{child.name:>8}\x1b[0m | "
        for raw in iter(child.popen.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with child.lock:
                child.lines.append(line)
            self.print(prefix + line)
        child.popen.stdout.close()

    def print(self, text: str) -> None:
        """Write ``text`` to the console without interleaving it with a child's line."""
        with self._console_lock:
            self.console.write(text + "\n")
            self.console.flush()

    # -- watching ---------------------------------------------------------------------------

    def _child(self, name: str) -> _Child:
        for child in reversed(self._children):
            if child.name == name:
                return child
        raise KeyError(name)

    def pid(self, name: str) -> int:
        """The pid (and process group id) of child ``name``."""
        return self._child(name).popen.pid

    def output(self, name: str) -> list[str]:
        """The most recent output lines of child ``name``."""
        child = self._child(name)
        if child.log_path is not None:
            try:
                text = child.log_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return []
            return text.splitlines()[-KEPT_LINES:]
        with child.lock:
            return list(child.lines)

    def check(self, names: Iterable[str] | None = None) -> None:
        """Raise StopRequested if the stop event is set, ChildDied if a child (of ``names``,
        when given) has exited."""
        if self._stopping:
            return
        if self.stop_event is not None and self.stop_event.is_set():
            raise StopRequested()
        watched = None if names is None else set(names)
        for child in self._children:
            if watched is not None and child.name not in watched:
                continue
            returncode = child.popen.poll()
            if returncode is not None:
                if child.reader is not None:
                    child.reader.join(timeout=1.0)  # collect its last words
                raise ChildDied(child.name, returncode, self.output(child.name)[-25:])

    def wait_http(
        self, url: str, timeout: float = STARTUP_TIMEOUT_S, *, names: Iterable[str] | None = None
    ) -> None:
        """Poll ``url`` until it answers 200, failing early if a child (of ``names``) dies."""
        watched = None if names is None else tuple(names)
        wait_http(url, timeout, alive_check=lambda: self.check(watched))

    def wait_for_output(self, name: str, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Wait until child ``name`` prints a line matching ``pattern``; return that line."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            for line in self.output(name):
                if regex.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise TimeoutError(f"'{name}' printed no line matching {pattern!r} in {timeout} s")
            time.sleep(0.1)

    def wait(self, poll_interval: float = 0.5) -> None:
        """Block until a child dies (ChildDied) or a stop is requested (StopRequested)."""
        while True:
            self.check()
            time.sleep(poll_interval)

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM every child's group, wait up to ``stop_timeout`` s, then SIGKILL the rest."""
        self._stopping = True
        running = [child for child in self._children if child.popen.poll() is None]
        for child in running:
            signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.print(
                    f"{child.name} did not stop within {self.stop_timeout:.0f} s; killing it"
                )
                signal_group(child.popen.pid, signal.SIGKILL)
                child.popen.wait()
        for child in self._children:
            # Whatever a child left behind in its group (a helper it spawned) goes too.
            signal_group(child.popen.pid, signal.SIGKILL)
            if child.reader is not None:
                child.reader.join(timeout=2.0)

    def __enter__(self) -> ProcessSupervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
