"""Group commit: the journal lines of every task waiting to save go out in one write and one
fsync, however many tasks wait (design I4), and a stop withdraws the copy intents not yet
being written.

A task queues its lines and waits. When no write is going on, the first task to see its lines
unwritten becomes the writer: it lets the tasks that are ready queue theirs (one turn of the
event loop), takes everything queued, and writes it in a worker thread. The others wait, each
for its own lines (a future each): a task is woken once, when its lines are written, not at
every batch's end to look whether they are (a save under load queues behind a write and was
woken twice: ~3 us each). When a batch ends with lines queued behind it, the first of their
tasks still waiting is woken to write them; one that is cancelled first hands that on.

Lines queued as *withdrawable* (a copy intent, saved before its POST) are taken back when
:meth:`GroupCommit.hold` is called (the run stops submitting) if their batch has not started:
they are never written, their ``undo`` puts the in-memory state back, and their commit answers
False at once. Lines of a batch already being written stay written. Withdrawable lines queued
after :meth:`hold` are refused.

Under load (lines queued behind the last batch when it ended), a batch begins ``gap`` seconds
after the last one began at the soonest, gathering what comes meanwhile: fewer writes, each an
fsync and two hand-offs between threads. A save that finds the journal idle goes out at once.

The writes are made by a thread of the process's own (:func:`_in_writer_thread`), not through
anyio's worker threads: a batch is handed over by a C queue and its end reported by one
``call_soon_threadsafe``. anyio's way (an extra turn of the loop, its capacity limiter, a
context copied, a Python queue and condition) cost the loop's thread more than the hand-off
itself, and the worker more hand-offs of the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

Line = TypeVar("Line")  # what ``write`` takes: the journal's lines are bytes


class _Entry(Generic[Line]):
    __slots__ = ("error", "finished", "lines", "undo", "waiter", "written")

    def __init__(self, lines: list[Line], undo: Callable[[], None] | None) -> None:
        self.lines = lines
        self.undo = undo  # withdrawable when set
        self.finished = False  # written, withdrawn, or failed (``error``)
        self.written = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None  # its task's, while it waits


class GroupCommit(Generic[Line]):
    """Batches of lines written by ``write`` (in a worker thread), one batch at a time."""

    def __init__(self, write: Callable[[list[Line]], None], *, gap: float = 0.0) -> None:
        self._write = write
        # Under load (lines were queued behind the last batch when it ended), a batch begins
        # ``gap`` seconds after the last one began at the soonest: more lines a write, fewer
        # writes (an fsync costs ~0.1 ms of CPU, its hand-off to the thread ~0.05).
        self._gap = gap
        self._began = -gap  # when the last batch began (the loop's clock)
        self._busy = False  # lines were queued behind it when it ended
        self._queue: list[_Entry[Line]] = []
        self._writing = False
        self.held = False  # submitting stopped: withdrawable lines are refused
        self.batches = 0  # writes made (each one fsync of the journal)
        # The loop of the batch being written: a task waits only while one is (``_writing``),
        # in that loop, so its future is made there without looking the loop up (a getpid()
        # system call each time on Python 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def commit(self, lines: list[Line], undo: Callable[[], None] | None = None) -> bool:
        """Queue ``lines``; True once they are durable. With ``undo`` they are withdrawable:
        False (nothing written, ``undo`` called) if :meth:`hold` comes before their batch
        starts. A failed write raises its error in every task whose lines it carried. No
        lines: True once what others queued is durable (at once if nothing is queued).
        """
        if undo is not None and self.held:
            undo()
            return False
        if not lines and not self._queue:
            return True
        entry = _Entry(lines, undo)
        self._queue.append(entry)
        while not entry.finished:
            if not self._writing:
                await self._write_batch()
                continue
            # Wait (here, not in a method: a coroutine less to pass through at every resume)
            # until the entry is finished, or its task is to write the next batch.
            waiter = entry.waiter = self._loop.create_future()  # type: ignore[union-attr]
            try:
                await waiter
            except BaseException:
                # Cancelled: the lines stay queued (the next batch writes them). Woken to write
                # them first? Another task writes them then.
                if not entry.finished and not self._writing:
                    self._wake_writer()
                raise
            finally:
                entry.waiter = None
        if entry.error is not None:
            raise entry.error
        return entry.written

    def queue(self, lines: list[Line]) -> None:
        """Lines to go out with the next batch; nobody waits for them."""
        self._queue.append(_Entry(lines, None))

    def hold(self) -> None:
        """Submitting stopped: withdraw the withdrawable lines not yet being written."""
        self.held = True
        queued, self._queue = self._queue, []
        kept = []
        for entry in queued:
            if entry.undo is None:
                kept.append(entry)
                continue
            entry.finished = True
            _wake(entry)
            entry.undo()  # may queue lines (a state to put back on disk): after ``kept``
        self._queue = kept + self._queue
        if not self._writing:
            self._wake_writer()  # it may have been one of those withdrawn

    def _wake_writer(self) -> None:
        """No write under way: wake the first task still waiting for queued lines, to write
        them (none waits: the next commit writes them)."""
        for entry in self._queue:
            if _wake(entry):
                return

    async def _write_batch(self) -> None:
        global _under_way
        self._writing = True
        self._loop = loop = asyncio.get_running_loop()
        _under_way += 1
        try:
            # The tasks woken with this one queue their lines first: one write for them all;
            # under load, those that come until ``gap`` after the last batch began too.
            wait = self._began + self._gap - loop.time() if self._busy else 0.0
            if wait > 0:
                with anyio.CancelScope(shield=True):
                    await asyncio.sleep(wait)
            else:
                await anyio.lowlevel.cancel_shielded_checkpoint()
            self._began = loop.time()
            batch, self._queue = self._queue, []
            lines = [line for entry in batch for line in entry.lines]
            error: BaseException | None = None
            try:
                if lines:
                    self.batches += 1
                    await _in_writer_thread(loop, self._write, lines)
            except BaseException as exc:
                error = exc
                raise
            finally:
                for entry in batch:
                    entry.finished, entry.written, entry.error = True, error is None, error
                    _wake(entry)
        finally:
            _under_way -= 1
            self._writing = False
            self._busy = bool(self._queue)
            self._wake_writer()


def _wake(entry: _Entry[Line]) -> bool:
    """Wake the task waiting for ``entry``; False if none waits."""
    waiter = entry.waiter
    if waiter is None or waiter.done():
        return False
    waiter.set_result(None)
    return True


# The writing thread: started at the first batch, then waiting on its queue for the next (a
# daemon: a process that ends leaves it, as it would anyio's idle workers). One for every store
# of the process, one batch at a time: a store writes one batch at a time anyway.
_jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
_writer: threading.Thread | None = None
_writer_lock = threading.Lock()
_under_way = 0  # batches being gathered or written (counted by the loops' threads)


def writes_under_way() -> int:
    """Batches being gathered or written now (a test's virtual clock stands still then)."""
    return _under_way


async def _in_writer_thread(
    loop: asyncio.AbstractEventLoop, write: Callable[[list[Line]], None], lines: list[Line]
) -> None:
    """``write(lines)`` in the writing thread; returns (or raises what it raised) once it has
    returned. Not cancellable, as ``anyio.to_thread.run_sync`` is not: a batch being written
    is waited for, and its tasks woken, before a cancellation goes on."""
    global _writer
    if _writer is None or not _writer.is_alive():
        with _writer_lock:
            if _writer is None or not _writer.is_alive():
                _writer = threading.Thread(target=_write_jobs, name="journal", daemon=True)
                _writer.start()
    done = loop.create_future()
    _jobs.put((loop, done, write, lines))
    with anyio.CancelScope(shield=True):
        await done


def _write_jobs() -> None:
    while True:
        loop, done, write, lines = _jobs.get()
        error: BaseException | None = None
        try:
            write(lines)
        except BaseException as exc:  # noqa: BLE001 -- raised in the task that waits for it
            error = exc
        with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_report, done, error)
        del loop, done, write, lines, error  # not kept alive while the thread waits


def _report(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
