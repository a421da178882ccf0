"""The callbacks' HTTP/1.1 client: a signed form POSTed over keep-alive asyncio connections.

Kept hand-written because it is the carrier's hot path (two to three callbacks per call): on
the 2-core machine one ``httpx.AsyncClient`` POST alone cost about 350 us of CPU, where a whole
callback here costs 90-130 us, and httpcore's pool does work in the square of its connections
on every request; the carrier on httpx took 2.5-3.6 ms of CPU per call instead of 0.3-0.4 ms,
and the end-to-end benchmark fell by far more than a tenth (docs/BENCHMARKS.md, "Sandbox
carrier on Starlette").
"""

from __future__ import annotations

import asyncio
import urllib.parse

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class NotConnected(Exception):
    """No connection to the host was made (refused, or not within the timeout)."""


class KeptConnections:
    """Idle connections by host, reused for the next request to it."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def close(self) -> None:
        """Close every idle connection."""
        for kept in self._idle.values():
            for _, writer in kept:
                writer.close()
        self._idle.clear()

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], connect_s: float, read_s: float
    ) -> int:
        """POST ``body`` over a kept connection to the URL's host, connecting within
        ``connect_s`` (else NotConnected) and answered within ``read_s`` (else TimeoutError);
        the answer's status."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{lines}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        idle = self._idle.setdefault(key, [])
        while idle:  # a kept connection the receiver may have closed meanwhile: one more try
            connection = idle.pop()
            try:
                async with asyncio.timeout(read_s):
                    return await self._exchange(key, connection, request)
            except TimeoutError:
                raise  # no answer in time: this try failed
            except (OSError, EOFError, ValueError):
                connection[1].close()
        try:
            async with asyncio.timeout(connect_s):
                connection = await asyncio.open_connection(*key)
        except OSError as exc:  # refused, unreachable, or not connected in time
            raise NotConnected(str(exc)) from exc
        async with asyncio.timeout(read_s):
            return await self._exchange(key, connection, request)

    async def _exchange(self, key: tuple[str, int], connection: _Connection, request: bytes) -> int:
        """One request and its response; the connection is kept for the next one unless the
        receiver closes it."""
        reader, writer = connection
        try:
            writer.write(request)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise EOFError("connection closed") from exc
            first, headers = _parse_head(head)
            status = int(first.split()[1])
            keep = headers.get("connection", "").lower() != "close"
            await _read_body(reader, headers)
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.setdefault(key, []).append(connection)
        else:
            writer.close()
        return status


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """An HTTP/1.1 head's first line, and its headers by lower-case name."""
    first, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return first, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The body after a head: chunked, or as long as Content-Length says."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return bytes(body)
    length = int(headers.get("content-length") or 0)
    return await reader.readexactly(length) if length else b""
