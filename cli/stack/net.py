"""What every part of the stack launcher uses: loopback ports, process liveness, waiting for a
condition or an HTTP answer, URLs in messages, and a small JSON client of the API."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOCALHOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0


class ServiceUnavailable(RuntimeError):
    """A configured service does not answer, or an embedded one would not start."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that nothing listens on right now (the caller still has to win the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different ports from ``free_port``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Whether something already listens on ``host:port`` (so a server could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so a port in TIME_WAIT is free for them: probe the same way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # Field 3 of /proc/PID/stat is the state; "Z" is a zombie waiting to be reaped.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; after ``timeout``
    seconds raise AssertionError, with what ``describe`` says about the state it was left in."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            state = f"; {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{state}")
        time.sleep(interval)


# A direct opener: every URL the stack fetches is on 127.0.0.1, and an HTTP(S)_PROXY in the
# environment must not route those requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_http(url: str, timeout: float, *, alive_check: Callable[[], None] | None = None) -> None:
    """Poll ``url`` until it answers 200; raise TimeoutError after ``timeout`` seconds.
    ``alive_check`` runs before every poll (it raises when what should answer has died)."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if alive_check is not None:
            alive_check()
        try:
            with _OPENER.open(url, timeout=2.0) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s ({last_error})")
        time.sleep(0.2)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


class ApiError(RuntimeError):
    """The Switchboard API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class ApiClient:
    """A minimal JSON client for the Switchboard HTTP API (stdlib only, never proxied)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return the decoded JSON body; raise ApiError on 4xx/5xx."""
        url = f"{self.base_url}{path}"
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, url, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        """GET ``path``."""
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``."""
        return self.request("POST", path, body)
