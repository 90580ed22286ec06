"""A ``run`` process that ends without its teardown (``fast_exit``) keeps the cyclic collector
paused from the signal to its exit: what is left after the run (the summary table, the last
lines) allocates enough to start collections of everything the run made (a second at 100,000
items), and nothing needs freeing. In-process runs (tests, the demo) get it back after the run.

The CLI's ``main`` in this process, with the process armed as ``python -m orchestrator run``
arms it; a SIGTERM among the copies. Judged on the collector's own callbacks: no collection
from the signal to the return of ``main``.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Iterator

import pytest

from orchestrator import fast_exit
from orchestrator.simulator.world import World
from tests.inprocess import LocalCloud


@pytest.fixture
def armed() -> Iterator[None]:
    """This process as ``python -m orchestrator run`` arms it; the collector back after."""
    before = list(fast_exit._armed)
    fast_exit.arm()
    yield
    fast_exit._armed[:] = before
    gc.enable()


def test_no_collection_from_the_signal_to_the_end_of_the_command(
    local_cloud: LocalCloud, caught: list[int], armed: None
) -> None:
    cloud = local_cloud
    cloud.populate(tenants=3, per_tenant=10)
    signalled: list[float] = []
    collections: list[tuple[str, int]] = []

    def signal_among_the_copies(world: World, now: float) -> None:
        if not signalled and len(world.truth(now).submissions) >= 3:
            signalled.append(now)
            gc.callbacks.append(note)
            os.kill(os.getpid(), signal.SIGTERM)

    def note(phase: str, info: dict[str, int]) -> None:
        collections.append((phase, info["generation"]))

    cloud.watch = signal_among_the_copies
    cloud.start()
    try:
        done = cloud.run()
    finally:
        if note in gc.callbacks:
            gc.callbacks.remove(note)
    assert signalled, "no copy was made"
    assert caught == []  # the run heard the signal
    assert done.returncode == 75, done.stderr
    assert "signal SIGTERM" in done.stdout + done.stderr
    assert collections == []
    assert not gc.isenabled()  # paused still: the process would end now
