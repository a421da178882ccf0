"""Gathers the status callbacks that arrive together: one inbox write and one
``calls.apply_statuses`` message for them all.

A provider posts several callbacks per call, and many calls run at once: a transaction and a
message per callback would be most of a call's cost. The first callback to arrive opens a
short window; every callback that comes within it, up to a maximum, is written to the status
inbox in one statement and one commit (a group commit), and each request is answered only once
that commit is done: a callback the provider saw acknowledged survives the API process, and
Redis losing its message. A failed write fails every request of the window, and the provider
sends them again. The reports then go out in one message with their inbox ids; a failed
publish is logged and left to the tick, which publishes again what stays in the inbox.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from shared.services import status_inbox as status_inbox_service
from shared.settings import get_settings

log = logging.getLogger(__name__)

Report = tuple[str, dict[str, Any]]
# Writes reports durably; their ids (inbox row ids).
Store = Callable[[list[Report]], Sequence[int]]
# Sends stored reports on, with their ids.
Publish = Callable[[list[Report], Sequence[int]], None]


class ReportBatcher:
    """Collects reports for up to ``window_s`` (or ``max_size`` reports), stores them together,
    then publishes them."""

    def __init__(self, window_s: float, max_size: int, store: Store, publish: Publish) -> None:
        self._window_s = window_s
        self._max_size = max_size
        self._store = store
        self._publish = publish
        self._waiting: list[tuple[Report, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, report: Report) -> None:
        """Returns once the report is stored; raises what storing raised."""
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        self._waiting.append((report, stored))
        if len(self._waiting) >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        await asyncio.shield(stored)

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
        reports = [report for report, _ in waiting]
        try:
            ids = await run_in_threadpool(self._store, reports)
        except Exception as exc:  # every request of the window fails; the provider resends
            for _, stored in waiting:
                if not stored.done():
                    stored.set_exception(exc)
            return
        for _, stored in waiting:
            if not stored.done():
                stored.set_result(None)
        try:
            await run_in_threadpool(self._publish, reports, ids)
        except Exception:  # the reports are in the inbox: the tick publishes them again
            log.exception("publishing %d stored status reports failed", len(reports))


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
            settings.status_batch_window_s,
            settings.status_batch_max_reports,
            status_inbox_service.store_reports,
            status_inbox_service.publish_reports,
        )
        _batchers[loop] = found
    return found
