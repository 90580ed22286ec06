"""The real clock's sleep: asyncio's, without looking the running loop up at every sleep (a
getpid() system call each on Python 3.11), yet right in every loop and thread it is used in."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import pytest
import uvloop

from orchestrator.clock import RealClock


async def _naps(clock: RealClock, count: int = 3, seconds: float = 0.01) -> float:
    """Seconds taken by ``count`` sleeps of ``seconds``."""
    started = time.monotonic()
    for _ in range(count):
        await clock.sleep(seconds)
    return time.monotonic() - started


def test_the_running_loop_is_looked_up_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = RealClock()
    looked: list[object] = []
    lookup = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        looked.append(lookup())
        return looked[-1]  # type: ignore[return-value]

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    assert anyio.run(_naps, clock, 5, backend="asyncio") >= 0.05
    assert len(looked) == 1
    # Another loop in the same thread (the first one closed): the clock sleeps in the new one.
    options: dict[str, Any] = {"use_uvloop": True}
    assert anyio.run(_naps, clock, 5, backend="asyncio", backend_options=options) >= 0.05
    assert len(looked) == 2
    assert looked[0] is not looked[1]


def test_one_clock_sleeps_in_two_loops_of_two_threads_at_once() -> None:
    clock = RealClock()
    took: dict[str, float] = {}
    ready = threading.Barrier(2)

    async def main(name: str) -> None:
        await clock.sleep(0.001)  # each thread's loop learnt in turn, and learnt again
        ready.wait(5)
        took[name] = await _naps(clock, 10, 0.005)

    def thread(name: str) -> None:
        asyncio.run(main(name)) if name == "asyncio" else uvloop.run(main(name))

    threads = [threading.Thread(target=thread, args=(n,)) for n in ("asyncio", "uvloop")]
    for each in threads:
        each.start()
    for each in threads:
        each.join(10)
    assert sorted(took) == ["asyncio", "uvloop"]
    assert all(0.05 <= seconds < 5 for seconds in took.values()), took


async def test_a_cancel_scope_ends_a_sleep_and_its_timer() -> None:
    clock = RealClock()
    loop = asyncio.get_running_loop()
    before = len(getattr(loop, "_scheduled", ()))
    with anyio.move_on_after(0.02) as scope:
        await clock.sleep(30)
    assert scope.cancelled_caught
    await clock.sleep(0)
    # The 30-second timer is cancelled with the sleep (asyncio drops cancelled timers lazily:
    # none of those left is still live).
    live = [timer for timer in getattr(loop, "_scheduled", ()) if not timer.cancelled()]
    assert len(live) <= before


async def test_no_time_or_less_is_a_turn_of_the_loop() -> None:
    clock = RealClock()
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)
    await clock.sleep(0)
    assert turned == [True]
    await clock.sleep(-1.0)
    await clock.sleep(float("nan"))
