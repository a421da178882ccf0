"""Gathers the status callbacks that arrive together into one ``calls.apply_statuses`` message.

A provider posts several callbacks per call, and many calls run at once: one message (and one
worker transaction) per callback is most of a call's cost. The first callback to arrive opens
a short window; every callback that comes within it, up to a maximum, goes out in one message.
Each request is answered only after its message is published, so a callback the provider saw
acknowledged is never lost with the API process; if the publish fails, every request of the
message fails and the provider sends again.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from shared import messaging
from shared.settings import get_settings

Report = tuple[str, dict[str, Any]]


class ReportBatcher:
    """Collects reports for up to ``window_s`` (or ``max_size`` reports) and publishes them."""

    def __init__(
        self, window_s: float, max_size: int, publish: Callable[[list[Report]], None]
    ) -> None:
        self._window_s = window_s
        self._max_size = max_size
        self._publish = publish
        self._waiting: list[tuple[Report, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, report: Report) -> None:
        """Returns once the report is published; raises what publishing raised."""
        loop = asyncio.get_running_loop()
        published: asyncio.Future[None] = loop.create_future()
        self._waiting.append((report, published))
        if len(self._waiting) >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        await asyncio.shield(published)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        if waiting:
            task = asyncio.get_running_loop().create_task(self._send(waiting))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, waiting: list[tuple[Report, asyncio.Future[None]]]) -> None:
        try:
            await run_in_threadpool(self._publish, [report for report, _ in waiting])
        except Exception as exc:  # every request of the message fails; the provider retries
            for _, published in waiting:
                if not published.done():
                    published.set_exception(exc)
        else:
            for _, published in waiting:
                if not published.done():
                    published.set_result(None)


def _publish_reports(reports: list[Report]) -> None:
    messaging.publish(messaging.TASK_APPLY_STATUSES, [reports])


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReportBatcher] = (
    weakref.WeakKeyDictionary()
)


def batcher() -> ReportBatcher:
    """This event loop's batcher (one per API process, in practice)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(loop)
    if found is None:
        settings = get_settings()
        found = ReportBatcher(
            settings.status_batch_window_s, settings.status_batch_max_reports, _publish_reports
        )
        _batchers[loop] = found
    return found
