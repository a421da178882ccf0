"""Status callbacks that arrive together are stored in one write and go out as one message;
each is answered once stored."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from api.status_batcher import Report, ReportBatcher


def report(n: int) -> Report:
    return (f"call-{n}", {"sid": f"CA{n}", "status": "completed"})


class Inbox:
    """Stores as the status inbox does (an id per report) and records what is published."""

    def __init__(self) -> None:
        self.stored: list[list[Report]] = []
        self.published: list[tuple[list[Report], list[int]]] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def store(self, reports: list[Report]) -> list[int]:
        with self._lock:
            self.stored.append(reports)
            ids = list(range(self._next_id, self._next_id + len(reports)))
            self._next_id += len(reports)
            return ids

    def publish(self, reports: list[Report], ids: Sequence[int]) -> None:
        with self._lock:
            self.published.append((reports, list(ids)))


async def published(inbox: Inbox, messages: int) -> None:
    deadline = time.monotonic() + 5
    while len(inbox.published) < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_callbacks_within_the_window_share_one_write_and_one_message():
    inbox = Inbox()

    async def run() -> None:
        batcher = ReportBatcher(0.05, 100, inbox.store, inbox.publish)
        await asyncio.gather(*(batcher.submit(report(n)) for n in range(5)))
        await batcher.submit(report(5))
        await published(inbox, 2)  # a message is published after its window is answered

    asyncio.run(run())
    assert inbox.stored == [[report(n) for n in range(5)], [report(5)]]
    assert inbox.published == [
        ([report(n) for n in range(5)], [1, 2, 3, 4, 5]),
        ([report(5)], [6]),
    ]


def test_a_full_window_is_stored_without_waiting_for_the_window():
    inbox = Inbox()

    async def run() -> float:
        batcher = ReportBatcher(30.0, 2, inbox.store, inbox.publish)
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(report(n)) for n in range(4)))
        return time.monotonic() - started

    assert asyncio.run(run()) < 5
    # Each full window is stored from the thread pool as it fills: two side by side, in either
    # order.
    assert sorted(inbox.stored) == [[report(0), report(1)], [report(2), report(3)]]


def test_every_callback_of_a_window_that_failed_to_be_stored_fails_and_nothing_is_sent():
    inbox = Inbox()

    def refuse(_: list[Report]) -> list[int]:
        raise ConnectionError("database down")

    async def run() -> list[BaseException | None]:
        batcher = ReportBatcher(0.01, 100, refuse, inbox.publish)
        results = await asyncio.gather(
            *(batcher.submit(report(n)) for n in range(3)), return_exceptions=True
        )
        return list(results)

    results = asyncio.run(run())
    assert len(results) == 3
    for result in results:
        assert isinstance(result, ConnectionError)
    assert inbox.published == []


def test_callbacks_are_answered_once_stored_and_a_failed_publish_does_not_fail_them(
    caplog: pytest.LogCaptureFixture,
):
    inbox = Inbox()
    publishing = threading.Event()
    release = threading.Event()

    def stuck_then_refuse(reports: list[Report], ids: Sequence[int]) -> None:
        publishing.set()
        release.wait(10)
        raise ConnectionError("broker down")

    async def run() -> list[BaseException | None]:
        batcher = ReportBatcher(0.01, 100, inbox.store, stuck_then_refuse)
        results = await asyncio.gather(
            *(batcher.submit(report(n)) for n in range(3)), return_exceptions=True
        )
        # Answered while the publish has not returned yet.
        assert not release.is_set()
        assert await asyncio.to_thread(publishing.wait, 10)
        release.set()
        # The failed publish is logged, not raised.
        deadline = time.monotonic() + 5
        while not failure_logged() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return list(results)

    def failure_logged() -> bool:
        return any(
            "publishing 3 stored status reports failed" in record.getMessage()
            and record.exc_info is not None
            and isinstance(record.exc_info[1], ConnectionError)
            for record in caplog.records
        )

    with caplog.at_level("ERROR", logger="api.status_batcher"):
        assert asyncio.run(run()) == [None, None, None]
    assert failure_logged()
    assert inbox.stored == [[report(0), report(1), report(2)]]


@pytest.mark.parametrize("window_s", [0.0, 0.01])
def test_a_lone_callback_is_stored_after_the_window(window_s: float):
    inbox = Inbox()

    async def run() -> None:
        await ReportBatcher(window_s, 100, inbox.store, inbox.publish).submit(report(1))

    asyncio.run(run())
    assert inbox.stored == [[report(1)]]
