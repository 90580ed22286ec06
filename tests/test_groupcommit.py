"""Group commit: one write for every task waiting, however many; a stop withdraws the intents
whose write has not begun; a compaction under way when the run hurries is abandoned whole."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from orchestrator.core.model import Item, Phase, Row
from orchestrator.state.checkpoint import SNAPSHOT, CheckpointStore, read_snapshot
from orchestrator.state.codec import item_from_dict
from orchestrator.state.groupcommit import GroupCommit


class SlowWrites:
    """``write`` for a GroupCommit: the first write waits until released (a slow disk)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.released = threading.Event()

    def write(self, lines: list[str]) -> None:
        self.batches.append(list(lines))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.released.wait(30)


@pytest.mark.anyio
async def test_thousands_of_waiting_commits_share_one_write() -> None:
    disk = SlowWrites()
    group = GroupCommit(disk.write)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(group.commit, ["first"])
        await anyio.to_thread.run_sync(disk.entered.wait)
        for n in range(3000):
            tasks.start_soon(group.commit, [f"line {n}"])
        await anyio.sleep(0.05)  # they all queue behind the slow write
        disk.released.set()
    assert [len(batch) for batch in disk.batches] == [1, 3000]
    assert group.batches == 2


@pytest.mark.anyio
async def test_a_hold_withdraws_what_is_not_being_written() -> None:
    """Withdrawable lines queued behind a write are never written once the run holds: their
    commits answer False at once and their undo runs; the write under way keeps its lines."""
    disk = SlowWrites()
    group = GroupCommit(disk.write)
    undone: list[int] = []
    answers: dict[int, bool] = {}

    async def intent(n: int) -> None:
        answers[n] = await group.commit([f"intent {n}"], lambda: undone.append(n))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(intent, 0)
        await anyio.to_thread.run_sync(disk.entered.wait)
        for n in range(1, 500):
            tasks.start_soon(intent, n)
        tasks.start_soon(group.commit, ["a state that must be saved"])
        await anyio.sleep(0.05)
        group.hold()
        assert sorted(undone) == list(range(1, 500))  # at once, before the write ends
        disk.released.set()
    assert answers == {0: True, **dict.fromkeys(range(1, 500), False)}
    assert disk.batches == [["intent 0"], ["a state that must be saved"]]
    assert await group.commit(["late intent"], lambda: undone.append(-1)) is False
    assert undone[-1] == -1
    assert disk.batches[-1] == ["a state that must be saved"]


@pytest.mark.anyio
async def test_a_waiter_cancelled_leaves_its_lines_and_the_others_waiting() -> None:
    """A task cancelled while it waits behind a write: its lines go out with the next batch
    all the same, and the tasks behind it are still woken to write theirs."""
    disk = SlowWrites()
    group = GroupCommit(disk.write)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(group.commit, ["first"])
            await anyio.to_thread.run_sync(disk.entered.wait)
            with anyio.CancelScope() as scope:
                tasks.start_soon(group.commit, ["b"])
                scope.cancel()
                await group.commit(["a"])  # cancelled at once: queued, not waited for
            tasks.start_soon(group.commit, ["c"])
            await anyio.sleep(0.05)
            disk.released.set()
    assert disk.batches == [["first"], ["a", "b", "c"]]


@pytest.mark.anyio
async def test_a_task_woken_to_write_but_cancelled_hands_the_write_on() -> None:
    """When a write ends, the first task waiting behind it is woken to write the next batch.
    Cancelled before it runs (``task.cancel()``: asyncio's own, not a cancel scope's), it wakes
    the next one instead: no task waits for ever for lines nobody writes."""
    disk = SlowWrites()
    group = GroupCommit(disk.write)
    first: list[asyncio.Task[Any]] = []
    cancelled: list[str] = []
    wake_writer = group._wake_writer

    def woken_then_cancelled() -> None:
        wake_writer()
        if first:  # the first task woken to write: cancelled before it runs
            first.pop().cancel()

    group._wake_writer = woken_then_cancelled  # type: ignore[method-assign]

    async def commit_then_cancelled() -> None:
        first.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await group.commit(["a"])
        except asyncio.CancelledError:
            cancelled.append("a")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(group.commit, ["first"])
            await anyio.to_thread.run_sync(disk.entered.wait)
            tasks.start_soon(commit_then_cancelled)
            await anyio.sleep(0.01)
            tasks.start_soon(group.commit, ["b"])
            await anyio.sleep(0.05)
            disk.released.set()
    assert cancelled == ["a"]
    assert disk.batches == [["first"], ["a", "b"]]


@pytest.mark.anyio
async def test_a_batch_being_written_is_waited_for_when_its_writer_is_cancelled() -> None:
    """The task writing a batch is cancelled while the write is under way: the write cannot be
    taken back, so the task waits for its end, and every task whose lines it carried is told
    they are durable (not handed the cancellation of another task)."""
    disk = SlowWrites()
    group = GroupCommit(disk.write)
    seen: list[str] = []

    async def writer(scope: anyio.CancelScope) -> None:
        with scope:
            await group.commit(["a"])
            seen.append("a written")

    async def rider() -> None:
        seen.append(f"b written: {await group.commit(['b'])}")

    scope = anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer, scope)
            tasks.start_soon(rider)  # queued in the same turn: one batch for both
            await anyio.to_thread.run_sync(disk.entered.wait)
            scope.cancel()
            await anyio.sleep(0.05)
            seen.append("released")
            disk.released.set()
    assert disk.batches == [["a", "b"]]
    assert seen == ["released", "a written", "b written: True"]


@pytest.mark.anyio
async def test_under_load_a_batch_begins_a_gap_after_the_last_at_the_soonest() -> None:
    """Saves that keep coming while a write goes on (queued behind it when it ends): the next
    batch begins ``gap`` after the last one began, at the soonest, so that it carries more
    lines (fewer fsyncs). A save that finds the journal idle is written at once, however
    recent the last batch."""
    began: list[tuple[float, bool, int]] = []  # when, whether under load, how many lines

    def write(lines: list[str]) -> None:
        began.append((time.monotonic(), group._busy, len(lines)))
        time.sleep(0.005)  # a disk: saves arrive while it writes

    group = GroupCommit(write, gap=0.05)

    async def saver(pause: float) -> None:
        for _ in range(10):
            await group.commit(["line"])
            await anyio.sleep(pause)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            for n in range(10):
                tasks.start_soon(saver, 0.002 * (n + 1))
    loaded = [b - a for (a, _, _), (b, busy, _) in pairwise(began) if busy]
    assert len(loaded) >= 3
    assert min(loaded) >= 0.045
    assert sum(n for _, _, n in began) == 100
    lone: GroupCommit[str] = GroupCommit(lambda lines: None, gap=1.0)
    started = time.monotonic()
    for _ in range(20):  # one task, each save after the last is durable: nothing to wait for
        await lone.commit(["line"])
    assert time.monotonic() - started < 0.5


def _items(count: int) -> list[Item]:
    return [
        Item(Row(line=n + 2, tenant="t", image_id=f"img-{n}", source_region="a", target_region="b"))
        for n in range(count)
    ]


class HurriedDuringCompaction(CheckpointStore):
    """The run is told to hurry while the snapshot is being written."""

    def _write_snapshot(self, *, abandon: bool = False) -> None:
        if abandon:
            self.hurry()
        super()._write_snapshot(abandon=abandon)


def test_a_compaction_under_way_when_the_run_hurries_is_abandoned(tmp_path: Path) -> None:
    store = HurriedDuringCompaction(tmp_path, compact_min=10)
    store.open()
    items = _items(20)
    before = (tmp_path / SNAPSHOT).read_bytes()

    async def commits() -> None:
        await store.commit(items)
        await store.commit([items[0].advance(Phase.SUBMITTING, detail="submitting")])
        await store.commit(items[1:])  # 40 lines, 1.5 per item passed: a compaction starts

    anyio.run(commits)
    store.close()
    assert store.compactions == 0
    assert (tmp_path / SNAPSHOT).read_bytes() == before  # no half-written snapshot
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    snap = read_snapshot(tmp_path, item_from_dict)
    assert snap is not None
    assert len(snap["items"]) == 20  # the journal holds everything
    assert snap["items"][items[0].key].phase == Phase.SUBMITTING


class HurriedBeforeTheFsync(CheckpointStore):
    """The run is told to hurry once the whole snapshot is written, before its fsync."""

    def _unless_hurried(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        def then_hurry() -> Iterator[bytes]:
            yield from chunks
            self.hurry()

        return super()._unless_hurried(then_hurry())


def test_a_snapshot_written_but_not_yet_synced_is_abandoned_too(tmp_path: Path) -> None:
    store = HurriedBeforeTheFsync(tmp_path, compact_min=10)
    store.open()
    before = (tmp_path / SNAPSHOT).read_bytes()
    items = _items(20)

    async def commits() -> None:
        await store.commit(items)
        await store.commit(items)  # 40 lines, 1.5 per item passed: a compaction starts

    anyio.run(commits)
    store.close()
    assert store.compactions == 0
    assert (tmp_path / SNAPSHOT).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
