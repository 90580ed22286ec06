"""The durable store: what commit returns is on disk, torn lines are repaired, one writer."""

import functools
import json
import os
from pathlib import Path

import pytest

from orchestrator.core.model import Item, Phase
from orchestrator.state.checkpoint import (
    JOURNAL,
    SNAPSHOT,
    CheckpointStore,
    LockHeld,
    LockLost,
    acquire_lock,
    check_lock,
    read_snapshot,
    release_lock,
    repair_jsonl,
)
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import StoreError
from tests.test_model import make_row


def reopen(state_dir: Path) -> CheckpointStore:
    """Open the state as a next process would (and close its journal: only the view is used)."""
    store = CheckpointStore(state_dir)
    store.open()
    store.close()
    return store


async def test_committed_items_survive_a_reopen(tmp_path: Path) -> None:
    """What commit returned for is read back by the next process."""
    store = CheckpointStore(tmp_path, compact_min=1000)
    store.open()
    item = Item(row=make_row("a")).advance(Phase.SUBMITTING, submitted_at=1.0)
    await store.commit([item], meta=RunMeta(list_path="/x.csv"))
    store.close()
    again = reopen(tmp_path)
    assert again.items[item.key] == item
    assert again.meta.list_path == "/x.csv"


# Ints beyond 64 bits (orjson alone reads them as floats), one that is not, a job id of 19
# digits in a row (a string: read by the stdlib too, the same), and a NaN-free float.
HUGE = {"size_bytes": 2**70 + 1, "polls": -(2**63) - 1, "attempt": 2**64 + 3}


@pytest.mark.parametrize("fields", [HUGE, {"size_bytes": 2**63 - 1, "job_id": "1" * 40}])
async def test_an_int_beyond_64_bits_reads_back_as_the_same_int(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    """What a commit saved is what the next process reads, from the journal and from the
    snapshot alike: an int beyond 64 bits (an image's ``__image_size`` as the cloud wrote it)
    stays an int, not the float that orjson alone reads it as."""
    store = CheckpointStore(tmp_path, compact_min=1000)
    store.open()
    item = Item(row=make_row("a"), **fields)  # type: ignore[arg-type]
    await store.commit([item, Item(row=make_row("b"))])
    store.close()
    from_journal = reopen(tmp_path)
    store = CheckpointStore(tmp_path)
    store.open()
    store.compact_now()  # the items into the snapshot, the journal emptied
    store.close()
    assert (tmp_path / JOURNAL).stat().st_size == 0
    from_snapshot = reopen(tmp_path)
    for read in (from_journal, from_snapshot):
        assert read.items[item.key] == item
        for name, value in fields.items():
            assert getattr(read.items[item.key], name) == value
            assert type(getattr(read.items[item.key], name)) is type(value)


async def test_a_refused_duplicate_line_read_from_the_journal_keeps_its_own_key(
    tmp_path: Path,
) -> None:
    """A duplicate line is an item of its own (``Row.line_tag``): read back from the journal
    (a run stopped before its first compaction), it must not take the place of the item whose
    key it repeats (that item would be forgotten, its copy in flight with it)."""
    store = CheckpointStore(tmp_path, compact_min=1000)
    store.open()
    first = Item(row=make_row("a")).advance(Phase.SUBMITTING, submitted_at=1.0)
    again = Item(
        row=make_row("a", line=3, line_tag="#line3", problem="duplicate of line 2"),
        phase=Phase.REJECTED,
    )
    await store.commit([first, again])
    store.close()
    assert not (tmp_path / SNAPSHOT).read_text().count('"a"')  # both in the journal only
    back = reopen(tmp_path)
    assert back.items[first.key] == first
    assert back.items[again.key] == again
    assert len(back.items) == 2


async def test_snapshot_is_always_parseable_json(tmp_path: Path) -> None:
    """After commits and compactions, checkpoint.json parses as JSON."""
    store = CheckpointStore(tmp_path, compact_min=3)
    store.open()
    for n in range(10):
        await store.commit([Item(row=make_row(f"i{n}", line=n + 2))])
        json.loads((tmp_path / SNAPSHOT).read_text())
    store.close()
    assert len(reopen(tmp_path).items) == 10


async def test_journal_lines_of_an_old_generation_are_ignored(tmp_path: Path) -> None:
    """A crash after the snapshot rename but before the journal truncation loses nothing."""
    store = CheckpointStore(tmp_path)
    store.open()
    item = Item(row=make_row("a"))
    await store.commit([item.advance(Phase.SUBMITTING)])
    journal = (tmp_path / JOURNAL).read_bytes()
    store.compact_now()
    await store.commit([item.advance(Phase.SUBMITTING).advance(Phase.RUNNING, job_id="j")])
    store.close()
    # Put the stale generation's line back in front, as if the truncation never happened.
    (tmp_path / JOURNAL).write_bytes(journal + (tmp_path / JOURNAL).read_bytes())
    assert reopen(tmp_path).items[item.key].phase == Phase.RUNNING


async def test_torn_journal_line_is_cut_off(tmp_path: Path) -> None:
    """A half-written last line (a crash mid-write) is dropped, the rest is kept."""
    store = CheckpointStore(tmp_path)
    store.open()
    item = Item(row=make_row("a"))
    await store.commit([item.advance(Phase.SUBMITTING)])
    store.close()
    with (tmp_path / JOURNAL).open("ab") as handle:
        handle.write(b'{"g":1,"item":{"row":')
    snap = read_snapshot(tmp_path)
    assert snap is not None
    assert snap["items"][item.key]["phase"] == "submitting"
    assert reopen(tmp_path).items[item.key].phase == Phase.SUBMITTING


def test_repair_keeps_whole_lines(tmp_path: Path) -> None:
    """repair_jsonl removes only the bytes after the last newline."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    assert repair_jsonl(path) == len(b'{"b":')
    assert path.read_bytes() == b'{"a":1}\n'


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    """Temp files left by a crash during a snapshot write are removed at open."""
    (tmp_path / ".checkpoint-abc").write_text("partial")
    reopen(tmp_path)
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_second_lock_is_refused_and_freed_on_release(tmp_path: Path) -> None:
    """One writer per state dir; the lock file is never deleted."""
    fd = acquire_lock(tmp_path)
    with pytest.raises(LockHeld):
        acquire_lock(tmp_path)
    release_lock(fd)
    release_lock(acquire_lock(tmp_path))
    assert (tmp_path / "lock").exists()


def test_a_lock_fd_reused_for_another_dir_is_judged_by_its_own_file(tmp_path: Path) -> None:
    """``check_lock`` remembers each held lock's file from ``acquire_lock`` on: once released,
    its fd's number taken by another dir's lock, the first dir's lock removed is still seen
    (and the other dir's lock is still this process's)."""
    first, second = tmp_path / "a", tmp_path / "b"
    fd = acquire_lock(first)
    release_lock(fd)
    (first / "lock").unlink()
    again = acquire_lock(second)
    try:
        assert again == fd  # the lowest free number: the same one
        check_lock(second, again)
        with pytest.raises(LockLost, match="lock was removed"):
            check_lock(first, again)
        (second / "lock").unlink()
        (second / "lock").write_text("")
        with pytest.raises(LockLost, match="lock was replaced"):
            check_lock(second, again)
    finally:
        release_lock(again)


async def test_a_lost_lock_stops_an_intents_write_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """The store checks the lock before every journal write: once it is lost, a copy intent's
    commit raises LockLost and nothing is appended (so no POST may follow: the engine sends
    one only after its intent's commit returned True)."""
    fd = acquire_lock(tmp_path)
    try:
        store = CheckpointStore(tmp_path)
        store.lock_check = functools.partial(check_lock, tmp_path, fd)
        store.open()
        item = Item(row=make_row("a")).advance(Phase.SUBMITTING, submitted_at=1.0)
        assert await store.commit_intents([item])
        journal = (tmp_path / JOURNAL).read_bytes()
        (tmp_path / "lock").unlink()
        other = Item(row=make_row("b", line=3)).advance(Phase.SUBMITTING, submitted_at=2.0)
        with pytest.raises(LockLost, match="lock was removed"):
            await store.commit_intents([other])
        assert (tmp_path / JOURNAL).read_bytes() == journal
        store.close()
    finally:
        release_lock(fd)


async def test_write_failure_is_fatal_and_sticky(tmp_path: Path) -> None:
    """An I/O error while saving raises StoreError, and every later commit does too."""
    store = CheckpointStore(tmp_path)
    store.open()
    store._journal.close()
    store._journal = open(os.devnull, "rb")  # noqa: SIM115, ASYNC230 -- read-only: writes fail
    with pytest.raises(StoreError):
        await store.commit([Item(row=make_row("a"))])
    with pytest.raises(StoreError):
        await store.commit([Item(row=make_row("b"))])
    store.close()
