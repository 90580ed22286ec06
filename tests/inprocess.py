"""The e2e harness without the process boundary: the CLI's ``main(argv)`` in this process, on
virtual time, against the in-memory cloud over the simulator's world.

``LocalCloud`` builds the same world, list and config files as the harness's ``Cloud`` (the same
scenario, through ``build_world``), but no simulator process and no HTTP: each run calls
``main`` with ``in_memory_clouds(world)`` and a :class:`DrivenClock`. The world's ground truth
(``World.truth``: submissions, duplicates, max in flight) is still the judge. Signals, kill -9,
lock contests between processes and disk faults stay with ``orchestrator.simulator.harness``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio.to_thread

from orchestrator.cli import main
from orchestrator.clock import Clock
from orchestrator.commands.run import RunRequest
from orchestrator.config import Config, TenantConfig
from orchestrator.config_file import load_config
from orchestrator.core.cloud import TenantCloud
from orchestrator.core.credentials import Credentials
from orchestrator.core.model import Item, Phase
from orchestrator.eventloop import LOOP_ENV
from orchestrator.simulator.faults import FaultPlan
from orchestrator.simulator.harness import Cloud
from orchestrator.simulator.inmemory import InMemoryTenantCloud, OpenClouds, in_memory_clouds
from orchestrator.simulator.scenario import build_world
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World
from orchestrator.state.groupcommit import writes_under_way
from tests.virtual_clock import VirtualClock, all_blocked

T = TypeVar("T")


class DrivenClock(VirtualClock):
    """Virtual time that drives itself: the first sleep in an event loop starts the autojump
    there (``main`` opens its own loop), which ends with the loop. Time stands still while a
    worker thread works (anyio's, or the journal's: the checkpoint's fsync): a task waiting
    on one is not idle."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        super().__init__(start)
        self._driven: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._drivers: set[asyncio.Task[None]] = set()

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if loop not in self._driven:
            self._driven.add(loop)
            driver = loop.create_task(self.autojump())
            self._drivers.add(driver)
            driver.add_done_callback(self._drivers.discard)
        await super().sleep(seconds)

    async def autojump(self) -> None:
        this = asyncio.current_task()
        threads = anyio.to_thread.current_default_thread_limiter()
        while True:
            await asyncio.sleep(0)
            if threads.borrowed_tokens or writes_under_way():
                await asyncio.sleep(0.0005)  # real work in a thread: let it finish first
            elif all_blocked(this) and not self._pop_due():
                await asyncio.sleep(0.001)  # nobody sleeps on the clock: let real I/O finish


Watch = Callable[[World, float], None]


class WatchedTenantCloud(InMemoryTenantCloud):
    """The in-memory cloud that lets the test act on the world before each call, at the call's
    time (what a test does from outside while a run goes on: fail a job, free slots)."""

    def __init__(self, watch: Watch, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch = watch

    async def _call(
        self,
        kind: str,
        region: str,
        op: Callable[[float], T],
        *,
        mutating: bool = False,
        iam: bool = False,
    ) -> T:
        self.watch(self.world, self.now())
        return await super()._call(kind, region, op, mutating=mutating, iam=iam)


def watched_clouds(world: World, faults: FaultPlan | None, watch: Watch) -> OpenClouds:
    """``in_memory_clouds``, with ``watch`` called before every call."""

    @asynccontextmanager
    async def open_clouds(
        _config: Config, credentials: Mapping[str, tuple[TenantConfig, Credentials]], clock: Clock
    ) -> AsyncIterator[Mapping[str, TenantCloud]]:
        yield {
            name: WatchedTenantCloud(
                watch, world, name, clock.now, faults, secret_key=creds.secret_key
            )
            for name, (_, creds) in credentials.items()
        }

    return open_clouds


@dataclass
class Completed:
    """What a run of ``main`` left: like ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str


@dataclass
class LocalCloud(Cloud):
    """A simulated world with its list and config, run in this process on virtual time."""

    clock: DrivenClock = field(default_factory=DrivenClock)
    world: World | None = None
    fault_plan: FaultPlan | None = None
    watch: Watch | None = None  # called with the world before each call of the next runs

    def start(self) -> None:
        scenario = {
            "version": 1,
            "params": self.params,
            "accounts": self.accounts,
            "images": self.images,
            "faults": self.faults,
        }
        self.world, self.fault_plan = build_world(json.loads(json.dumps(scenario)))
        self.write_list()
        self.write_config()

    def stop(self) -> None:
        """Nothing to stop: no process."""

    def env(self, **overrides: str) -> dict[str, str]:
        """The harness's environment, on asyncio's own loop: virtual time knows when every
        task is blocked by looking inside asyncio (``all_blocked``), which uvloop hides."""
        return super().env(**{LOOP_ENV: "asyncio", **overrides})

    def truth(self) -> Truth:
        assert self.world is not None, "start() first"
        truth = self.world.truth(self.clock.now())
        if self.fault_plan is not None:
            truth = replace(truth, faults=self.fault_plan.decided)
        return truth

    def main(self, *args: str, env: Mapping[str, str] | None = None) -> Completed:
        """``ims-migrate ARGS`` in this process, against the world, on the virtual clock."""
        assert self.world is not None, "start() first"
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(args),
            dict(env) if env is not None else self.env(),
            out,
            err,
            clouds=(
                in_memory_clouds(self.world, self.fault_plan)
                if self.watch is None
                else watched_clouds(self.world, self.fault_plan, self.watch)
            ),
            clock=self.clock,
        )
        return Completed(code, out.getvalue(), err.getvalue())

    def run_request(self) -> RunRequest:
        """This list and config as ``execute_run`` takes them (with the harness's environment)."""
        env = self.env()
        return RunRequest(self.list_path, load_config(self.config_path, env, self.root), env)

    def run(  # type: ignore[override]  # the same call, a Completed instead of a process
        self, *extra: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> Completed:
        del timeout  # virtual time: nothing to wait for
        return self.main(
            "run", str(self.list_path), "--config", str(self.config_path), *extra, env=env
        )


def sigterm_among_the_copies(count: int = 3) -> Callable[[Item], None]:
    """An ``on_change`` that sends this process SIGTERM when the ``count``-th item is running."""
    running: list[Item] = []

    def on_change(item: Item) -> None:
        if item.phase == Phase.RUNNING:
            running.append(item)
            if len(running) == count:
                os.kill(os.getpid(), signal.SIGTERM)

    return on_change
