"""Damage is loud: a bad journal line that is not the last one, or a checkpoint of the wrong
shape, stops the load naming the file and the line, and touches nothing; only a torn last line
is the normal result of a crash, cut off as before."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest

from orchestrator.cli import main
from orchestrator.core.model import Item, Phase
from orchestrator.state.checkpoint import (
    JOURNAL,
    LOCK,
    SNAPSHOT,
    CheckpointStore,
    LockLost,
    acquire_lock,
    check_lock,
    release_lock,
    set_aside_damage,
)
from orchestrator.state.store import StateDamaged
from tests.test_model import make_row


async def state_with_journal(state_dir: Path, items: int = 3) -> list[str]:
    """A state dir whose journal holds ``items`` item lines (no compaction); its lines."""
    store = CheckpointStore(state_dir, compact_min=1000)
    store.open()
    for n in range(items):
        row = make_row(f"img-{n}")
        await store.commit([Item(row=row).advance(Phase.SUBMITTING, submitted_at=1.0)])
    store.close()
    return (state_dir / JOURNAL).read_text().splitlines()


def files(state_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(state_dir.iterdir())}


def open_store(state_dir: Path) -> CheckpointStore:
    store = CheckpointStore(state_dir)
    try:
        store.open()
    finally:
        store.close()
    return store


BAD_LINES = {
    "a number": "5",
    "a list": '[{"g":0}]',
    "an empty item": '{"g":0,"item":{}}',
    "a bogus phase": "BOGUS",
    "a changed byte": "CHANGED",
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
async def test_a_bad_journal_line_that_is_not_the_last_stops_the_load(
    tmp_path: Path, kind: str
) -> None:
    """The first line damaged, two good ones after it: StateDamaged naming file:line."""
    lines = await state_with_journal(tmp_path)
    bad = BAD_LINES[kind]
    if bad == "BOGUS":
        bad = lines[0].replace('"phase":"submitting"', '"phase":"bogus"')
    elif bad == "CHANGED":
        bad = lines[0].replace('"item":', '"item";', 1)
    lines[0] = bad
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    before = files(tmp_path)
    with pytest.raises(StateDamaged, match=rf"{JOURNAL}:1: "):
        open_store(tmp_path)
    assert files(tmp_path) == before


SHAPES = {
    "items a list": lambda snap: snap | {"items": []},
    "an item 5": lambda snap: snap | {"items": {"k": 5}},
    "an item without row": lambda snap: snap | {"items": {"k": {"phase": "pending"}}},
    "meta a string": lambda snap: snap | {"meta": "x"},
    "generation a string": lambda snap: snap | {"generation": "x"},
}


@pytest.mark.parametrize("kind", sorted(SHAPES))
async def test_a_checkpoint_of_the_wrong_shape_stops_the_load(tmp_path: Path, kind: str) -> None:
    """Valid JSON, wrong shape: StateDamaged naming checkpoint.json, nothing touched."""
    await state_with_journal(tmp_path, items=1)
    open_store(tmp_path)  # folds the journal in: the items are in the snapshot
    snap = json.loads((tmp_path / SNAPSHOT).read_text())
    (tmp_path / SNAPSHOT).write_text(json.dumps(SHAPES[kind](snap)))
    before = files(tmp_path)
    with pytest.raises(StateDamaged, match=SNAPSHOT):
        open_store(tmp_path)
    assert files(tmp_path) == before


async def test_a_torn_last_line_is_cut_off_as_before(tmp_path: Path) -> None:
    """A crash tore the last line: the load goes on with the lines before it."""
    lines = await state_with_journal(tmp_path)
    (tmp_path / JOURNAL).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    assert len(open_store(tmp_path).items) == 2


async def test_repair_state_sets_the_damaged_files_aside(tmp_path: Path) -> None:
    """--repair-state renames the damaged files (never deletes them); the dir then loads empty."""
    lines = await state_with_journal(tmp_path)
    lines[0] = "5"
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    before = files(tmp_path)
    moved = set_aside_damage(tmp_path)
    assert sorted(p.name.split(".damaged-")[0] for p in moved) == sorted([SNAPSHOT, JOURNAL])
    assert {p.read_bytes() for p in moved} == {before[SNAPSHOT], before[JOURNAL]}
    assert open_store(tmp_path).items == {}


async def test_repair_state_leaves_a_sound_state_alone(tmp_path: Path) -> None:
    """Nothing damaged: nothing set aside."""
    await state_with_journal(tmp_path)
    before = files(tmp_path)
    assert set_aside_damage(tmp_path) == []
    assert files(tmp_path) == before


def cli(*argv: str) -> tuple[int, str]:
    """``ims-migrate ARGV`` in this process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    code = main(
        list(argv), {"HUAWEICLOUD_SDK_AK": "ak", "HUAWEICLOUD_SDK_SK": "sk"}, io.StringIO(), err
    )
    return code, err.getvalue()


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    path = tmp_path / "l.csv"
    path.write_text("image_id,source_region,target_region\nabc,cn-north-4,cn-east-3\n")
    return path


@pytest.mark.parametrize("command", ["run", "status", "report"])
def test_a_state_dir_that_is_a_file_is_one_line_not_a_traceback(listed: Path, command: str) -> None:
    """--state-dir names a file: a clear message, exit 74."""
    (listed.parent / "afile").write_text("x")
    args = [str(listed)] if command == "run" else []
    code, err = cli(command, *args, "--state-dir", str(listed.parent / "afile"))
    assert (code, "Traceback" in err) == (74, False), err
    assert "afile" in err


@pytest.mark.parametrize("name", [SNAPSHOT, "events.jsonl"])
def test_an_unreadable_state_file_is_one_line_not_a_traceback(listed: Path, name: str) -> None:
    """checkpoint.json or events.jsonl cannot be read (here: a directory): exit 74."""
    state = listed.with_suffix(".state")
    (state / name).mkdir(parents=True)
    code, err = cli("run", str(listed))
    assert (code, "Traceback" in err) == (74, False), err
    assert name in err


def test_a_demo_workdir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    """demo --workdir names a file: exit 2, one line."""
    (tmp_path / "afile").write_text("x")
    code, err = cli("demo", "--workdir", str(tmp_path / "afile"))
    assert (code, "Traceback" in err) == (2, False), err


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_lock_removed_or_replaced_under_its_holder_is_lost(tmp_path: Path, how: str) -> None:
    """The held fd is no longer the file at the lock's path: LockLost naming it."""
    fd = acquire_lock(tmp_path)
    try:
        check_lock(tmp_path, fd)  # still ours
        (tmp_path / LOCK).unlink()
        if how == "replaced":
            (tmp_path / LOCK).write_text("")
        with pytest.raises(LockLost, match=f"lock was {how}"):
            check_lock(tmp_path, fd)
    finally:
        release_lock(fd)


@pytest.mark.parametrize("number", [100, 1])
def test_a_damaged_line_is_named_as_file_colon_number_not_an_emoji(
    listed: Path, number: int
) -> None:
    """The message names the line as written, whatever its number: rich reads ":100:" as an
    emoji code (found by the kill sweep: "journal.jsonl💯 not valid JSON")."""
    state = listed.with_suffix(".state")
    state.mkdir()
    lines = anyio.run(state_with_journal, state, 101)
    lines[number - 1] = lines[number - 1].replace('"item":', '"item";', 1)
    (state / JOURNAL).write_text("\n".join(lines) + "\n")
    code, err = cli("run", str(listed), "--state-dir", str(state))
    assert code == 74, err
    assert f"{JOURNAL}:{number}: not valid JSON" in err.replace("\n", ""), err
