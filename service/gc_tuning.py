"""Tunes the garbage collector for a long-running server; the benchmark saw its pauses as the p99 tail.

Two changes, for the life of the app only (undone when it stops, so an app built and stopped many times in one
process, as in the tests, leaves the collector as it found it):

- Freeze the start-up heap. Torch, the loaded models and FastAPI's routes are hundreds of thousands of objects
  that live as long as the process; every full collection used to rescan them, tens of milliseconds with the
  event loop stopped. Frozen, they sit in the permanent generation (reference counting still frees them).
- Collect the young generation less often. A request allocates a few hundred objects that reference counting
  frees almost all of; at the default threshold of 700 net allocations a collection ran every request or two.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Net allocations between young-generation collections (CPython's default: 700).
YOUNG_GENERATION_THRESHOLD = 50_000


@contextmanager
def server_gc() -> Iterator[None]:
    """Freeze every object that exists now and raise the young-generation threshold, for the block's duration."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
