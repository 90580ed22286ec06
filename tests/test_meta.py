"""The checkpoint's meta: typed, read from checkpoints of every earlier shape, damage loud."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.state.checkpoint import JOURNAL, SNAPSHOT, CheckpointCorrupt, CheckpointStore
from orchestrator.state.meta import META_VERSION, BlockedKey, ListMemory, MetaError, RunMeta

# Written by a real run of the code before RunMeta (a tenant blocked, the "finished" key).
BEFORE_RUNMETA = Path(__file__).parent / "fixtures" / "checkpoint_before_runmeta"

FULL = RunMeta(
    list_path="/srv/m.csv",
    checked_list=ListMemory("f" * 64, problems=((3, "image_id", "empty"),), warnings=()),
    blocked={"t1": BlockedKey(fingerprint="ab12", code="APIGW.0301", message="bad", at=5.0)},
    last_exit=1,
    last_reason="1 failed",
    last_end=9.5,
    speed_samples=((1.0, 60.0), (2.5, 80.0)),
)


def old_state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "m.state"
    shutil.copytree(BEFORE_RUNMETA, state_dir)
    return state_dir


def opened(state_dir: Path) -> CheckpointStore:
    store = CheckpointStore(state_dir)
    store.open()
    return store


def stored_meta(state_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((state_dir / SNAPSHOT).read_text())["meta"]
    return meta


def test_a_checkpoint_written_before_runmeta_loads_with_every_key(tmp_path: Path) -> None:
    """The old checkpoint (no meta version) reads into typed fields, its values intact."""
    store = opened(old_state(tmp_path))
    meta = store.meta
    store.close()
    assert meta.list_path is not None
    assert meta.list_path.endswith("/test_make0/migration.csv")
    assert meta.checked_list is not None
    assert meta.checked_list.fingerprint.startswith("00dd6a10")
    assert meta.checked_list.problems == meta.checked_list.warnings == ()
    assert set(meta.blocked) == {"t1"}
    why = meta.blocked["t1"]
    assert (why.fingerprint, why.code, why.at) == (
        "3e631c188360310c",
        "APIGW.0301",
        1796239688.093364,
    )
    assert (meta.last_exit, meta.last_reason) == (1, "blocked tenant(s): t1")
    assert meta.last_end == 1796239688.881364
    assert meta.speed_samples == ((1.0, 0.6657912731170654), (2.0, 0.7692770957946777))
    assert len(store.items) == 4


def test_the_next_snapshot_of_an_old_checkpoint_keeps_its_values(tmp_path: Path) -> None:
    """Rewritten, the old meta gains its version and loses only the dead "finished" key."""
    state_dir = old_state(tmp_path)
    before = stored_meta(state_dir)
    store = opened(state_dir)
    store.compact_now()
    store.close()
    after = stored_meta(state_dir)
    del before["finished"]
    assert after == {"version": META_VERSION, **before}


def test_an_old_journal_meta_line_still_applies(tmp_path: Path) -> None:
    """A journal line of the old code that forgot the list (``"list": null``) is read."""
    state_dir = old_state(tmp_path)
    (state_dir / JOURNAL).write_text('{"g":1,"meta":{"list":null}}\n')
    store = opened(state_dir)
    store.close()
    assert store.meta.checked_list is None
    assert store.meta.last_exit == 1


def test_meta_round_trips_through_its_dict() -> None:
    """Every field survives to_dict, JSON and from_dict."""
    assert RunMeta.from_dict(json.loads(json.dumps(FULL.to_dict()))) == FULL


def test_defaults_are_left_out_of_the_stored_meta() -> None:
    """An empty meta stores only its version."""
    assert RunMeta().to_dict() == {"version": META_VERSION}


def test_unknown_keys_of_a_later_version_are_ignored() -> None:
    """A key this code does not know (a later version's) neither fails nor survives."""
    meta = RunMeta.from_dict({"version": META_VERSION + 1, "last_exit": 0, "novel": [1]})
    assert meta == RunMeta(last_exit=0)


@pytest.mark.parametrize(
    "damaged",
    [
        "x",
        {"blocked": {"t1": "nope"}},
        {"blocked": {"t1": {"code": "X", "message": "m", "at": 1}}},
        {"blocked": []},
        {"last_exit": "1"},
        {"last_exit": True},
        {"last_end": "later"},
        {"speed_samples": [[1.0]]},
        {"list_path": 5},
    ],
)
def test_a_damaged_key_is_refused(damaged: object) -> None:
    """A known key of a shape this code never writes is a MetaError, not a silent default."""
    with pytest.raises(MetaError):
        RunMeta.from_dict(damaged)


def test_a_damaged_list_memory_is_forgotten() -> None:
    """The checked list is a cache: a damaged one is dropped and the list checked again."""
    for damaged in ("x", {"fingerprint": 5}, {"fingerprint": "f", "problems": [[1, "a"]]}):
        assert RunMeta.from_dict({"list": damaged, "last_exit": 0}) == RunMeta(last_exit=0)


def test_a_damaged_meta_in_a_checkpoint_is_checkpoint_corrupt(tmp_path: Path) -> None:
    """Opening a checkpoint whose meta is damaged names the file and refuses to go on."""
    state_dir = old_state(tmp_path)
    (state_dir / JOURNAL).write_text('{"g":1,"meta":{"last_exit":"one"}}\n')
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint\.json: damaged meta"):
        opened(state_dir)


def test_changes_name_only_the_keys_that_differ() -> None:
    """A commit's journal line carries the changed keys; one back at its default is null."""
    changed = replace(FULL, checked_list=None, last_exit=0)
    assert changed.changes(FULL) == {"last_exit": 0, "list": None}
    assert FULL.changes(FULL) == {}


async def test_a_commit_journals_only_the_changed_keys(tmp_path: Path) -> None:
    """The meta line of a commit holds what changed, and a reopen reads the whole meta."""
    state_dir = old_state(tmp_path)
    store = opened(state_dir)
    await store.commit(meta=replace(store.meta, blocked={}))
    store.close()
    [line] = (state_dir / JOURNAL).read_text().splitlines()
    assert json.loads(line)["meta"] == {"blocked": None}
    again = opened(state_dir)
    again.close()
    assert again.meta.blocked == {}
    assert again.meta.last_exit == 1
