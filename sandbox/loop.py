"""The one event loop of a sandbox carrier, on a thread of its own: it serves the REST API,
plays every call's lifecycle and posts the callbacks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[[], Coroutine[Any, Any, None]]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (the API's too; a dependency except on Windows), asyncio's without."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An event loop run on a daemon thread; work is handed to it from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = new_event_loop()
        self._ident: int | None = None
        self._started = False
        # The loop keeps only a weak reference to a task: each is held here until it is done.
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Run the loop (once)."""
        if not self._started:
            self._started = True
            threading.Thread(target=self._run, daemon=True, name=self.name).start()

    def _run(self) -> None:
        self._ident = threading.get_ident()
        try:
            self.loop.run_forever()
        finally:  # uvloop's loop keeps its descriptors until it is closed
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run ``coroutine`` on the loop from another thread and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=timeout)

    def spawn(self, work: Work) -> None:
        """Run ``work`` as a task of the loop (from any thread)."""
        if threading.get_ident() == self._ident:
            self._create_task(work)
        else:
            self.loop.call_soon_threadsafe(self._create_task, work)

    def _create_task(self, work: Work) -> None:
        task = self.loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self, timeout: float = 5) -> None:
        """Cancel every task of the loop but the caller's, and wait for them to end."""
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=timeout)

    def close(self) -> None:
        """Stop the loop once the work in hand is done; a loop never started is closed."""
        if not self._started:
            self.loop.close()
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
