"""Python's cyclic garbage collector (``gc``) and a large state: pause the collector while the
state is loaded, then freeze what was loaded out of the collector's sight for the run.

Loading 100,000 items builds hundreds of thousands of objects that all stay alive. With the
cyclic collector running, it walks them again and again while they are built, then twice more
right after (they are all young), then at every full collection of the run. None of them forms
a cycle, so reference counting alone frees the items the run replaces: the collector has
nothing to find there. Only the collector's work changes: what is kept, and when memory is
freed, stay the same.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

FREEZE_MIN = 10_000  # items from which a loaded state is frozen out of the collector's sight


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while the block builds objects (nests: the outermost resumes it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_loaded(items: int) -> None:
    """Once a state of ``items`` items is loaded (collector paused): if it is large, move every
    object alive now out of the collector's sight for the rest of the run (``gc.freeze``)."""
    if items >= FREEZE_MIN:
        gc.freeze()
