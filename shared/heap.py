"""The garbage collector's settings for a long-running process (the API, a worker, the
sandbox carrier).

Such a process imports and builds most of what it keeps for its lifetime before it serves:
modules, the ORM's mappings, compiled statements, the provider SDK. Left in the collected
generations, every full collection walks all of it again, and under load that was a tenth of
the API's and of the sandbox carrier's CPU. ``settle`` moves what exists once the process is
ready out of the collector's reach (``gc.freeze``): a full collection then walks only what was
made since. The youngest generation is collected after 10,000 new objects instead of 700:
most of a request's objects are freed by their reference counts before then, so fewer are
walked, and promoted to be walked again, while still in use.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Once the process is ready to serve: what it holds now is never walked by a collection
    again. Nearly all of it lives as long as the process; what of it becomes cyclic garbage
    later (a connection replaced after a reconnect, say) is not reclaimed, a bounded cost."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
