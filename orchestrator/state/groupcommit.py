"""Group commit: the journal lines of every task waiting to save go out in one write and one
fsync, however many tasks wait (design I4), and a stop withdraws the copy intents not yet
being written.

A task queues its lines and waits. When no write is going on, the first task to see its lines
unwritten becomes the writer: it lets the tasks that are ready queue theirs (one turn of the
event loop), takes everything queued, and writes it in a worker thread. The others wait for
the next change (one event for all, not a lock handed from task to task: thousands of waiters
wake in one turn of the loop, and the next batch takes all of them that are still unwritten).

Lines queued as *withdrawable* (a copy intent, saved before its POST) are taken back when
:meth:`GroupCommit.hold` is called (the run stops submitting) if their batch has not started:
they are never written, their ``undo`` puts the in-memory state back, and their commit answers
False at once. Lines of a batch already being written stay written. Withdrawable lines queued
after :meth:`hold` are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

Line = TypeVar("Line")  # what ``write`` takes: the journal's lines are bytes


@dataclass(eq=False)
class _Entry(Generic[Line]):
    lines: list[Line]
    undo: Callable[[], None] | None  # withdrawable when set
    finished: bool = False  # written, withdrawn, or failed (``error``)
    written: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[Line]):
    """Batches of lines written by ``write`` (in a worker thread), one batch at a time."""

    def __init__(self, write: Callable[[list[Line]], None]) -> None:
        self._write = write
        self._queue: list[_Entry[Line]] = []
        self._writing = False
        self._changed: anyio.Event | None = None  # set when a batch ends or lines are withdrawn
        self.held = False  # submitting stopped: withdrawable lines are refused
        self.batches = 0  # writes made (each one fsync of the journal)

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
            if self._writing:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
            else:
                await self._write_batch()
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
            entry.undo()  # may queue lines (a state to put back on disk): after ``kept``
        self._queue = kept + self._queue
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _write_batch(self) -> None:
        self._writing = True
        try:
            # The tasks woken with this one queue their lines first: one write for them all.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            batch, self._queue = self._queue, []
            lines = [line for entry in batch for line in entry.lines]
            error: BaseException | None = None
            try:
                if lines:
                    self.batches += 1
                    await anyio.to_thread.run_sync(self._write, lines)
            except BaseException as exc:
                error = exc
                raise
            finally:
                for entry in batch:
                    entry.finished, entry.written, entry.error = True, error is None, error
        finally:
            self._writing = False
            self._notify()
