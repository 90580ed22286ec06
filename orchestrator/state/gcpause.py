"""The garbage collector and a large state: load it without the collector, then keep it out of
the collector's way for the run.

Loading 100,000 items builds hundreds of thousands of objects that all stay alive. With the
cyclic collector running, it walks them again and again while they are built, then twice more
right after (they are all young), then at every full collection of the run. None of them forms
a cycle, so reference counting alone frees the items the run replaces: the collector has
nothing to find there.
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


def keep_for_the_run(items: int) -> None:
    """Once a state of ``items`` items is loaded (collector paused): if it is large, move every
    object alive now out of the collector's sight for good (``gc.freeze``)."""
    if items >= FREEZE_MIN:
        gc.freeze()
