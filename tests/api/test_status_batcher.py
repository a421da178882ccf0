"""Status callbacks that arrive together go out as one message, each answered once sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.status_batcher import Report, ReportBatcher


def report(n: int) -> Report:
    return (f"call-{n}", {"sid": f"CA{n}", "status": "completed"})


def test_callbacks_within_the_window_share_one_message():
    published: list[list[Report]] = []

    async def run() -> None:
        batcher = ReportBatcher(0.05, 100, published.append)
        await asyncio.gather(*(batcher.submit(report(n)) for n in range(5)))
        await batcher.submit(report(5))

    asyncio.run(run())
    assert published == [[report(n) for n in range(5)], [report(5)]]


def test_a_full_message_goes_out_without_waiting_for_the_window():
    published: list[list[Report]] = []

    async def run() -> float:
        batcher = ReportBatcher(30.0, 2, published.append)
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(report(n)) for n in range(4)))
        return time.monotonic() - started

    assert asyncio.run(run()) < 5
    # Each full message is published from the thread pool as it fills: two messages are
    # published side by side, in either order.
    assert sorted(published) == [[report(0), report(1)], [report(2), report(3)]]


def test_every_callback_of_a_message_that_failed_to_publish_fails():
    def refuse(_: list[Report]) -> None:
        raise ConnectionError("broker down")

    async def run() -> list[BaseException | None]:
        batcher = ReportBatcher(0.01, 100, refuse)
        results = await asyncio.gather(
            *(batcher.submit(report(n)) for n in range(3)), return_exceptions=True
        )
        return list(results)

    results = asyncio.run(run())
    assert len(results) == 3
    for result in results:
        assert isinstance(result, ConnectionError)


@pytest.mark.parametrize("window_s", [0.0, 0.01])
def test_a_lone_callback_is_published_after_the_window(window_s: float):
    published: list[list[Report]] = []

    async def run() -> None:
        await ReportBatcher(window_s, 100, published.append).submit(report(1))

    asyncio.run(run())
    assert published == [[report(1)]]
