"""A fork server for the processes of isolated stacks: one Python process that has imported the
third-party packages the API and the workers load (Celery, kombu, SQLAlchemy, FastAPI, uvicorn,
the Twilio SDK, ...), and forks a child for each ``python -m MODULE ARGS`` it is asked to run.

A test suite starts a few hundred API and worker processes; each spends most of a second of CPU
importing those packages before it does anything. A child forked from this server starts with
them imported and runs the module exactly as ``python -m`` would, in a session of its own, with
the environment, working directory and output file it was given, and exits as that command
would. Nothing of Switchboard is imported here (settings and metrics read their environment on
import, so each child imports them fresh), nor any package that reads its environment when
imported (``prometheus_client`` reads its multiprocess directory then).

Run as a script (``python cli/stack/forkserver.py``) it serves requests, one JSON line each on
its standard input, answering each with one JSON line; imported, ``ForkServer`` starts and talks
to one. The dev stack does not use it: its processes start as a deployment's do.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Imported once by the server, then shared by every child. The packages whose import reads the
# environment a child is given are left out (see the module docstring): Celery's command line
# among them, as it loads its plugins' commands, and Flower's import ``prometheus_client``; what
# those commands import besides is here.
PRELOADED = (
    # Celery and its broker transports; the command line's own packages.
    "celery",
    "celery.apps.worker",
    "celery.worker.consumer",
    "celery.concurrency.thread",
    "celery.beat",
    "kombu.transport.redis",
    "kombu.transport.pyamqp",
    "kombu.mixins",
    "celery.bin.base",
    "celery.bin.worker",
    "celery.bin.beat",
    "celery.bin.shell",
    "celery.bin.multi",
    "celery.events.state",
    "celery.backends.base",
    "celery.fixups.django",
    "click_repl",
    "click_plugins",
    "click_didyoumean",
    "tornado.web",
    "tornado.httpclient",
    "tornado.auth",
    "tornado.options",
    "humanize",
    "pygments.formatters.terminal256",
    "pygments.lexers.python",
    "pytz",
    "pydantic.v1",
    "wsgiref.simple_server",
    "xml.sax.saxutils",
    # The database, Redis, settings.
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "psycopg2.extras",
    "redis",
    "pydantic_settings",
    "cryptography.fernet",
    # The API and its server.
    "fastapi",
    "fastapi_offline",
    "uvicorn.main",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    # Provider SDKs and what the calls need.
    "httpx",
    "twilio.rest",
    "twilio.rest.api.v2010.account",
    "twilio.request_validator",
    "twilio.twiml.voice_response",
    "phonenumbers",
    "phonenumbers.timezone",
)
# Never imported by the server: a child must import them with its own environment.
NOT_PRELOADED = ("prometheus_client", "flower", "shared", "api", "worker", "cli", "sandbox")


@dataclass(frozen=True)
class Launch:
    """What a forked child runs: ``python -m module *args``."""

    module: str
    args: list[str]


# -- the server (run as a script) ------------------------------------------------------------


def _preload() -> None:
    import importlib

    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # an optional transport or provider SDK that is not installed
    leaked = sorted(name for name in sys.modules if name.split(".", 1)[0] in NOT_PRELOADED)
    if leaked:
        raise RuntimeError(f"the fork server must not import {', '.join(leaked)}")
    if threading.active_count() != 1:
        raise RuntimeError("the fork server must be single-threaded to fork")


def _become_child(request: Mapping[str, Any]) -> Launch:
    """In a just-forked child: a session of its own, the request's output, directory and
    environment, and stdio as ``python -u`` has it."""
    os.setsid()
    output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.close(devnull)
    # The standard streams keep their file descriptors, now the output file: a line at a time
    # reaches it, as a ``python -u`` child's does.
    for stream in (sys.__stdout__, sys.__stderr__):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # ``python -m`` puts the working directory first on the path.
    sys.path.insert(0, request["cwd"])
    return Launch(request["module"], list(request["args"]))


def serve() -> Launch | None:
    """Answer requests until standard input closes (then None); in a forked child, return what
    it is to run."""
    requests = sys.stdin.buffer
    answers = sys.stdout.buffer
    exited: dict[int, int] = {}

    def answer(reply: Mapping[str, Any]) -> None:
        answers.write(json.dumps(reply).encode() + b"\n")
        answers.flush()

    for line in requests:
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                return _become_child(request)
            answer({"pid": pid})
        elif request["op"] == "poll":
            pid = request["pid"]
            if pid not in exited:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    answer({"error": f"{pid} is not a child of the fork server"})
                    continue
                if done:
                    exited[pid] = os.waitstatus_to_exitcode(status)
            answer({"returncode": exited.get(pid)})
        else:
            answer({"error": f"unknown op {request['op']!r}"})
    return None


def _run(launch: Launch) -> None:
    sys.argv = [launch.module, *launch.args]
    runpy.run_module(launch.module, run_name="__main__", alter_sys=True)


# -- the client ------------------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, as much of ``subprocess.Popen`` as the supervisor uses."""

    stdout: IO[bytes] | None = None

    def __init__(self, server: ForkServer, pid: int, args: Sequence[str]) -> None:
        self._server = server
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.poll(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (returncode := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.02)
        return returncode


class ForkServer:
    """Starts the server on first use; ``spawn`` runs ``python -m MODULE ARGS`` in a child of
    it. Safe to share between threads; ``close`` stops the server (not its children). A server
    that exited is not started again: its children would be nobody's to watch."""

    def __init__(self) -> None:
        self._server: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def serves(argv: Sequence[str]) -> bool:
        """Whether ``argv`` is a ``python -m`` command of this interpreter, which it can run."""
        return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m"

    def _call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._server is None:
                # Its error output is ours: why it refused to start, should it.
                self._server = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            assert self._server.stdin is not None and self._server.stdout is not None
            self._server.stdin.write(json.dumps(request).encode() + b"\n")
            self._server.stdin.flush()
            line = self._server.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited (code {self._server.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the fork server refused: {reply['error']}")
        return reply

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, output: Path
    ) -> ForkedProcess:
        """Run ``argv`` (``serves(argv)``) in a new session, its output appended to ``output``."""
        if not self.serves(argv):
            raise ValueError(f"not a python -m command of {sys.executable}: {argv!r}")
        reply = self._call(
            {
                "op": "spawn",
                "module": argv[2],
                "args": list(argv[3:]),
                "env": dict(env),
                "cwd": str(cwd),
                "output": str(output),
            }
        )
        return ForkedProcess(self, int(reply["pid"]), argv)

    def poll(self, pid: int) -> int | None:
        """The exit code of child ``pid`` (negative: the signal that ended it), or None."""
        returncode = self._call({"op": "poll", "pid": pid})["returncode"]
        return None if returncode is None else int(returncode)

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                assert self._server.stdin is not None
                self._server.stdin.close()
                self._server.wait(timeout=10)
                if self._server.stdout is not None:
                    self._server.stdout.close()
                self._server = None


if __name__ == "__main__":
    # This script's own folder (cli/stack) is first on the path: its modules' names must not
    # shadow a package's.
    del sys.path[0]
    _preload()
    launched = serve()
    if launched is not None:
        _run(launched)
