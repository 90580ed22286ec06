"""The durable store: a JSON snapshot plus an append-only journal, under one lock.

Layout of a state dir::

    lock             flock'ed by the one writer; never deleted
    checkpoint.json  snapshot {"version", "generation", "meta", "items"}: always parseable JSON
    journal.jsonl    one JSON line per change since the snapshot, tagged with its generation
    events.jsonl     the structured log of outcomes (written by logs.py)
    report.csv       rewritten at the end of every run

A commit appends its lines to the journal and fsyncs once for every commit waiting (group
commit, ``groupcommit.py``), so the cost of a state change does not grow with the list. When the
journal holds ``COMPACT_RATIO`` (1.5) lines per item, it is compacted: a new snapshot
with the next generation is written to a temp file in the same folder, fsynced, renamed over
the old one and the folder is fsynced; then the journal is truncated. A compaction rewrites
every item, so waiting for a multiple of the items keeps the snapshots a run writes to 2/3 of
its journal (linear in the changes, whatever the list's length), and the journal a resume
reads to 1.5 lines per item. The journal a run finds on opening (a stopped run's) is
appended to and counted as if this run had written it. Journal lines of an older generation
are ignored on load, so a crash between the rename and the truncation loses nothing. A line
torn by a crash is cut off on the next start. ``flock`` is advisory and unreliable on NFS:
keep state dirs local.

A stop makes the store quick: copy intents not yet being written are withdrawn
(:meth:`CheckpointStore.hold_intents`), and once the run must end (:meth:`CheckpointStore.hurry`)
no compaction starts and one under way is abandoned (its temp file removed, the journal kept:
the next run appends to it).

(Just over 400 lines: the lock, the journal's repair and the store's commit share one file's
format rules; the snapshot text and the group commit already live apart.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import crashpoints
from orchestrator.core.model import Item
from orchestrator.state.atomic import fsync_dir, write_atomic
from orchestrator.state.codec import item_from_dict, item_readable, item_to_dict
from orchestrator.state.damage import (
    ADVICE,
    check_head,
    checked,
    read_journal,
    set_aside,
    unbuilt,
)
from orchestrator.state.groupcommit import GroupCommit
from orchestrator.state.jsonbytes import dumps
from orchestrator.state.meta import MetaError, RunMeta
from orchestrator.state.snapshot import (
    SNAPSHOT_CHUNK,
    read_head,
    read_snapshot_file,
    render_snapshot,
)
from orchestrator.state.store import StateDamaged, StoreError

VERSION = 1
SNAPSHOT = "checkpoint.json"
JOURNAL = "journal.jsonl"
LOCK = "lock"
TEMP_PREFIX = ".checkpoint-"
_UNTAGGED = len(b'{"g":0,')  # a queued line's generation tag, replaced when it is written
# The journal is folded into a new snapshot once it holds this many lines per item
# (CheckpointStore._due): each fold encodes every item, each line one, so the snapshots a run
# writes cost at most 1 / 1.5 of its journal, and a resume reads at most 1.5 lines per item
# besides the snapshot. (At 2 lines' worth, a resume of a 100,000-item state read 128 MB of
# journal: 5.2 s to its first poll, over the 5 s the resume is allowed; at 1.5, 0.6 s less.)
COMPACT_RATIO = 1.5
# Under load, a journal write begins this long after the last one began at the soonest
# (GroupCommit's ``gap``): at most ~66 writes a second, each an fsync (~0.1 ms of CPU) and a
# hand-off to the writing thread, while a save waits ~8 ms longer on average then. A save
# that finds the journal idle is written at once.
BATCH_GAP = 0.015


class _Abandoned(Exception):
    """A compaction given up because the run must end now (the journal stays as it is)."""


class LockHeld(Exception):
    """Another ims-migrate process holds this state dir."""


CheckpointCorrupt = StateDamaged  # checkpoint.json exists but cannot be read: never overwritten


def acquire_lock(state_dir: Path) -> int:
    """Take the state dir's lock without waiting; return the fd to keep open. Raises LockHeld."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a file in the way, no permission, read-only disk: exit 74
        raise StoreError(
            f"cannot use the state dir {state_dir}: {exc.strerror or exc} "
            "(give a directory this user may write with --state-dir)"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise LockHeld(str(state_dir / LOCK)) from None
        raise
    held = os.fstat(fd)
    _HELD[fd] = (state_dir, os.fspath(state_dir / LOCK), held.st_ino, held.st_dev)
    return fd


# fd -> (the state dir it was taken for, its lock's path, the lock file's inode and device), for
# each lock this process holds (:func:`acquire_lock` to :func:`release_lock`): an open fd is
# always the same file, so :func:`check_lock` needs one ``stat`` of the path, not an ``fstat``
# and a path built each time as well (it runs before every copy request and every journal write).
_HELD: dict[int, tuple[Path, str, int, int]] = {}


class LockLost(LockHeld):
    """The lock this run holds is no longer the file at the lock's path (removed or replaced):
    another run may hold the new one. The run stops submitting (exit 75)."""


def check_lock(state_dir: Path, fd: int) -> None:
    """LockLost unless ``fd`` is still the file at the state dir's lock path (same inode)."""
    known = _HELD.get(fd)
    if known is not None and known[0] is state_dir:
        _, path, ino, dev = known
    else:  # an fd not taken here, or another dir's lock
        held = os.fstat(fd)
        path, ino, dev = os.fspath(state_dir / LOCK), held.st_ino, held.st_dev
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    if now is None or now.st_ino != ino or now.st_dev != dev:
        what = "removed" if now is None else "replaced"
        raise LockLost(
            f"{path} was {what} while this run held it (the lock file must never be deleted); "
            "another run may be using this state dir: this one stopped submitting"
        )


def release_lock(fd: int) -> None:
    _HELD.pop(fd, None)  # before the close: the number may be reused at once
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def repair_jsonl(path: Path) -> int:
    """Cut a line torn by a crash off the end of a JSON-lines file; return bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(max(0, size - 65536))
        tail = handle.read()
        if tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else 0
        if cut < 0 and size > len(tail):  # a torn line longer than 64 KiB: scan from the start
            handle.seek(0)
            whole = handle.read()
            keep = whole.rfind(b"\n") + 1
        handle.truncate(keep)
        os.fsync(handle.fileno())
        return size - keep


def count_lines(path: Path) -> int:
    """The whole lines of a file (read in parts: a journal may hold a line per item)."""
    count = 0
    with path.open("rb") as handle:
        while part := handle.read(1 << 20):
            count += part.count(b"\n")
    return count


def read_snapshot(
    state_dir: Path,
    convert: Callable[[Any], Any] | None = None,
    readable: Callable[[Any], bool] | None = None,
) -> dict[str, Any] | None:
    """The snapshot plus the journal applied, read-only (for ``status``); None if no state.

    ``convert`` turns each item's dict into what the caller keeps (an ``Item``), as it is read.
    Damage (anything but a torn last journal line) is a StateDamaged naming the file and line.
    ``readable`` (whether ``convert`` builds a value without error): the journal is read first,
    and a snapshot's item that one of its lines replaces is only checked, not built.
    """
    path = state_dir / SNAPSHOT
    journal_path = state_dir / JOURNAL
    head = read_head(path) if readable is not None and journal_path.exists() else None
    early = None  # the journal, read (and its items built) before the snapshot's text is
    if head is not None and type(head.get("generation", 0)) is int:
        early = read_journal(journal_path, head.get("generation", 0), convert)
    try:
        snap = read_snapshot_file(
            path,
            checked(path, convert),
            early.items if early is not None else (),
            unbuilt(path, convert, readable) if readable is not None else None,
        )
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CheckpointCorrupt(f"{path}: a directory, not a checkpoint; {ADVICE}") from None
    except OSError as exc:  # not a directory, no permission, I/O error
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CheckpointCorrupt(f"{path}: not valid JSON ({exc}); {ADVICE}") from None
    if not isinstance(snap, dict) or snap.get("version") != VERSION:
        raise CheckpointCorrupt(
            f"{path}: not an ims-migrate checkpoint of version {VERSION}; {ADVICE}"
        )
    check_head(path, snap)
    generation = snap.setdefault("generation", 0)
    if early is not None and early.generation != generation:
        # Replaced by a compaction between its first line and the rest (read without the
        # lock, by ``status``): read again, every item built.
        return read_snapshot(state_dir, convert)
    items: dict[str, Any] = snap.setdefault("items", {})
    meta: dict[str, Any] = snap.setdefault("meta", {})
    if early is not None:  # every item it replaces is put back here (its key holds None until then)
        early.apply(items, meta)
    elif journal_path.exists():
        read_journal(journal_path, generation, convert).apply(items, meta)
    return snap


def snapshot_meta(snap: Mapping[str, Any], state_dir: Path) -> RunMeta:
    """The meta of a snapshot from :func:`read_snapshot`, typed; damage is CheckpointCorrupt."""
    try:
        return RunMeta.from_dict(snap.get("meta", {}))
    except MetaError as exc:
        raise CheckpointCorrupt(f"{state_dir / SNAPSHOT}: damaged meta ({exc})") from None


def set_aside_damage(state_dir: Path) -> list[Path]:
    """``run --repair-state``: a damaged checkpoint and journal are renamed aside (never
    deleted), so that the run rebuilds the state from its list; the new names, or none when
    nothing was damaged. The caller holds the lock."""
    try:
        snap = read_snapshot(state_dir, item_from_dict)
        if snap is not None:
            snapshot_meta(snap, state_dir)
    except StateDamaged:
        moved = set_aside(state_dir, (SNAPSHOT, JOURNAL))
        fsync_dir(state_dir)
        return moved
    return []


def _key_of(item: Item) -> str:
    return item.key


class CheckpointStore:
    """The file-backed :class:`~orchestrator.state.store.Store`. Open it with :meth:`open`."""

    def __init__(self, state_dir: Path, *, compact_min: int = 1000) -> None:
        self.state_dir = state_dir
        self._items: dict[str, Item] = {}
        self._meta = RunMeta()
        self._generation = 0
        self._journal_lines = 0
        self._compact_min = compact_min
        # Queued: the items themselves (frozen values), encoded by the writing thread.
        self._group: GroupCommit[Item | bytes] = GroupCommit(self._write, gap=BATCH_GAP)
        self._hurry = False  # the run must end: no compaction (read by the writing thread)
        self._snapshots = 0  # snapshots begun (their items taken): counted by the writing thread
        self._failed: StoreError | None = None
        self._journal: Any = None
        # Costs, for the run's last event and the benchmark: wall seconds spent writing
        # (fsync included) and CPU seconds spent encoding and writing (all of it in the
        # writing thread: :meth:`_write`).
        self.fsyncs = 0
        # Raises (LockLost) once the state dir's lock is not this process's any more: nothing
        # is written over what another run may be writing now.
        self.lock_check: Callable[[], None] = lambda: None
        self.compactions = 0
        self.write_seconds = 0.0
        self.cpu_seconds = 0.0

    # -- opening -----------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the state dir holds a snapshot already (before :meth:`open`)."""
        return (self.state_dir / SNAPSHOT).exists()

    def open(self) -> bool:
        """Load the state (repairing torn lines, sweeping temp files). False if there was none.

        The caller must hold the lock. A write that fails (disk full) is a StoreError (exit 74).
        """
        try:
            return self._load()
        except OSError as exc:
            raise self._cannot_save(exc) from exc

    def _cannot_save(self, exc: OSError) -> StoreError:
        return StoreError(
            f"cannot save the state in {self.state_dir}: {exc.strerror or exc} "
            "(free disk space or fix permissions, then run again)"
        )

    def _load(self) -> bool:
        for stale in self.state_dir.glob(TEMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)
        # Damage: nothing is touched. A snapshot's item that the journal replaces is not built.
        snap = read_snapshot(self.state_dir, item_from_dict, item_readable)
        repair_jsonl(self.state_dir / JOURNAL)  # a line torn by a crash: cut off
        existed = snap is not None
        if snap is not None:
            self._generation = int(snap.get("generation", 0))
            self._meta = snapshot_meta(snap, self.state_dir)
            self._items = snap["items"]
        else:
            self._write_snapshot()
        # The journal the last run left (a stopped one: up to COMPACT_RATIO lines per item) is
        # appended to, counted as if this run had written it: no 100,000-item rewrite as a
        # resumed run begins. Lines of an older generation stay ignored (and counted).
        journal = self.state_dir / JOURNAL
        if existed and journal.exists() and journal.stat().st_size > 0:
            self._journal_lines = count_lines(journal)
        if self._journal is None:
            self._journal = (self.state_dir / JOURNAL).open("ab")
        return existed

    def close(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            try:
                journal.close()  # flushes what a failed write left in its buffer: fails again
            except OSError as exc:
                if self._failed is None:
                    raise self._cannot_save(exc) from exc

    # -- Store protocol -------------------------------------------------------------------------

    @property
    def items(self) -> Mapping[str, Item]:
        return self._items

    @property
    def meta(self) -> RunMeta:
        return self._meta

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        if self._failed is not None:
            raise self._failed
        lines: list[Item | bytes] = self._store(items)
        if meta is not None:
            changes = meta.changes(self._meta)
            self._meta = meta
            if changes:
                lines.append(dumps({"g": 0, "meta": changes}))
        # No lines: still wait for what others queued (a cancelled task's lines, say).
        await self._group.commit(lines)

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        if self._failed is not None:
            raise self._failed
        stored = self._items
        before = [(item.key, stored.get(item.key)) for item in items]
        snapshots = self._snapshots
        lines: list[Item | bytes] = self._store(items)

        def undo() -> None:  # withdrawn: the stored states are what they were
            for (key, old), new in zip(before, items, strict=True):
                if stored.get(key) is not new:
                    continue
                if old is None:
                    del stored[key]
                elif self._snapshots == snapshots:
                    stored[key] = old
                else:  # a snapshot may hold the intent: the old state goes on disk too
                    self._group.queue(self._store([old]))

        return await self._group.commit(lines, undo)

    def hold_intents(self) -> None:
        self._group.hold()

    def hurry(self) -> None:
        self._hurry = True

    @property
    def commits(self) -> int:
        """Journal writes made (one fsync each)."""
        return self._group.batches

    def _store(self, items: Iterable[Item]) -> list[Item | bytes]:
        """The items, to be queued for the journal: the stored states from now on."""
        stored = self._items
        queued: list[Item | bytes] = []
        for item in items:
            stored[item.key] = item
            queued.append(item)
        return queued

    # -- writing (in a worker thread) -----------------------------------------------------------

    def _write(self, queued: list[Item | bytes]) -> None:
        """A batch: its items encoded (an item is a frozen value: its line is the one it would
        have had when it was queued), then appended. Here, not as each item is saved: the CPU
        is counted by two ``thread_time`` calls a batch, not two a save (a system call each,
        as costly as the line's encoding; and a wall-clock timer in the loop's thread counts
        its waits for the processor and the GIL too)."""
        cpu = time.thread_time()
        lines = [
            line if isinstance(line, bytes) else dumps({"g": 0, "item": item_to_dict(line)})
            for line in queued
        ]
        self.cpu_seconds += time.thread_time() - cpu
        self._append(lines)

    def _append(self, lines: list[bytes]) -> None:
        self.lock_check()
        try:
            crashpoints.reach("save")
            started, cpu = time.perf_counter(), time.thread_time()
            tag = b'{"g":%d,' % self._generation
            for start in range(0, len(lines), SNAPSHOT_CHUNK):  # a 100,000-line batch, in parts
                batch = lines[start : start + SNAPSHOT_CHUNK]
                self._journal.write(b"".join(tag + line[_UNTAGGED:] + b"\n" for line in batch))
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self.fsyncs += 1
            self._journal_lines += len(lines)
            self.write_seconds += time.perf_counter() - started
            self.cpu_seconds += time.thread_time() - cpu
            if not self._hurry and self._due():
                self._compact(abandon=True)
        except OSError as exc:
            self._failed = StoreError(
                f"cannot save the state in {self.state_dir}: {exc.strerror or exc} "
                "(free disk space or fix permissions, then run again)"
            )
            raise self._failed from exc

    def _due(self) -> bool:
        """Whether the journal is to be folded into a new snapshot now: once it holds
        COMPACT_RATIO lines per item (and ``compact_min`` lines). A fold encodes every item, a
        line one item; so a run's snapshots cost at most 1 / COMPACT_RATIO of its journal,
        however long the list, and a resume reads at most COMPACT_RATIO lines per item."""
        return self._journal_lines >= max(self._compact_min, COMPACT_RATIO * len(self._items))

    def _write_snapshot(self, *, abandon: bool = False) -> None:
        """``abandon``: give up (``_Abandoned``, the old snapshot kept) once the run hurries."""
        self._snapshots += 1  # before the items are taken (commit_intents' undo reads it)
        # At once: the event loop may change the map. The items only, each stored under its own
        # key: no pair per item (100,000 of them, at the peak of a run's memory).
        items = list(self._items.values())
        head = {"version": VERSION, "generation": self._generation, "meta": self._meta.to_dict()}
        chunks = render_snapshot(head, items, item_to_dict, _key_of)
        if abandon:
            chunks = self._unless_hurried(chunks)
        write_atomic(self.state_dir / SNAPSHOT, chunks, durable=True, prefix=TEMP_PREFIX)
        self.fsyncs += 2

    def _unless_hurried(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self._hurry:
                raise _Abandoned
            yield chunk
        if self._hurry:  # all written but not yet fsynced (seconds for 70 MB): give up still
            raise _Abandoned

    def _compact(self, *, abandon: bool = False) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        self._generation += 1
        try:
            self._write_snapshot(abandon=abandon)
        except _Abandoned:  # the journal and its generation stay: the next run goes on with them
            self._generation -= 1
            return
        if self._journal is not None:
            self._journal.close()
        with (self.state_dir / JOURNAL).open("wb") as handle:
            os.fsync(handle.fileno())
        self._journal = (self.state_dir / JOURNAL).open("ab")
        self._journal_lines = 0
        self.compactions += 1
        self.write_seconds += time.perf_counter() - started
        self.cpu_seconds += time.thread_time() - cpu

    def compact_now(self) -> None:
        """Fold the journal into a fresh snapshot (at the end of a run)."""
        try:
            self._compact()
        except OSError as exc:
            raise self._cannot_save(exc) from exc
