"""The collector's settings for long-running processes."""

from __future__ import annotations

import gc

from shared import heap


def test_settling_takes_what_the_process_holds_out_of_later_collections():
    held = [[number] for number in range(1000)]  # containers the collector would walk
    before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() >= before + len(held)
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
