"""A resumed run takes its unchanged list from the checkpoint instead of checking it again.

The fingerprint must change with anything the checks depend on (bytes, configured tenants,
extra regions); the recalled rows and problems must be what checking would give.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from orchestrator.commands.run import save_list
from orchestrator.config import Config, TenantConfig
from orchestrator.core.model import Item
from orchestrator.core.outcome import merge_list
from orchestrator.manifest import parse_list, read_list
from orchestrator.state.checkpoint import CheckpointStore
from orchestrator.state.meta import RunMeta
from orchestrator.state.recall import recall, remember
from tests.inprocess import LocalCloud

CONFIG = Config(
    tenants=MappingProxyType({"a": TenantConfig(name="a"), "b": TenantConfig(name="b")}),
    source=Path("ims-migrate.toml"),
)
ROWS = [
    "tenant,image_id,source_region,target_region",
    "a,img-1,cn-north-4,cn-east-3",
    "b,img-2,cn-north-4,cn-east-3",
    "a,img-3,cn-north-4,cn-north-4",  # bad: same region
    "a,img-4,cn-north-4,cn-south-1",
]


def write(folder: Path, lines: list[str]) -> Path:
    path = folder / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_fingerprint_follows_the_bytes_and_what_the_checks_read(tmp_path: Path) -> None:
    path = write(tmp_path, ROWS)
    first = read_list(path, CONFIG).fingerprint
    assert read_list(path, CONFIG).fingerprint == first
    fewer = replace(CONFIG, tenants=MappingProxyType({"a": TenantConfig(name="a")}))
    assert read_list(path, fewer).fingerprint != first
    assert read_list(path, replace(CONFIG, extra_regions=("lab-1",))).fingerprint != first
    write(tmp_path, [*ROWS, "a,img-5,cn-north-4,cn-east-3"])
    assert read_list(path, CONFIG).fingerprint != first


def test_recall_gives_what_checking_and_merging_give(tmp_path: Path) -> None:
    source = read_list(write(tmp_path, ROWS), CONFIG)
    manifest = parse_list(source, CONFIG)
    old = Item(row=parse_list(read_list(write(tmp_path, ["image_id,source_region,target_region",
               "img-9,cn-north-4,cn-east-3"]), CONFIG), CONFIG).rows[0])  # fmt: skip
    merged = merge_list({old.key: old}, manifest.rows, manifest.rejected)
    # The checkpoint keeps items in the order they were first stored, not the list's.
    stored = {item.key: item for item in reversed(merged)}
    recalled = recall(remember(manifest), source, stored)
    assert recalled is not None
    again, items = recalled
    assert again == manifest
    assert items == merged
    assert [i.listed for i in items] == [True, True, True, True, False]  # one rejected


def test_recall_refuses_another_list_or_a_damaged_meta(tmp_path: Path) -> None:
    """No memory, another list's, or a damaged one (forgotten when read): the list is checked."""
    source = read_list(write(tmp_path, ROWS), CONFIG)
    manifest = parse_list(source, CONFIG)
    items = {item.key: item for item in merge_list({}, manifest.rows)}
    stored = remember(manifest).to_dict()
    assert recall(None, source, items) is None
    assert recall(replace(remember(manifest), fingerprint="x"), source, items) is None
    damaged = RunMeta.from_dict({"list": {**stored, "problems": [[1, "a"]]}})
    assert recall(damaged.checked_list, source, items) is None
    assert RunMeta.from_dict({"list": "nonsense"}).checked_list is None


async def test_a_commit_cut_short_leaves_no_fingerprint_to_vouch_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list is edited, the run that stores it dies part-way through that commit (the item
    lines written, not the meta line), the edit is undone: the old fingerprint must not bring
    back the rows of the edit (the added row would be copied though no longer listed)."""
    state = tmp_path / "state"
    state.mkdir()
    store = CheckpointStore(state)
    store.open()
    source = read_list(write(tmp_path, ROWS), CONFIG)
    first = parse_list(source, CONFIG)
    await save_list(store, str(source.path), first, merge_list(store.items, first.rows))
    edited = parse_list(
        read_list(write(tmp_path, [*ROWS, "a,img-9,cn-north-4,cn-east-3"]), CONFIG), CONFIG
    )
    real_commit = store.commit

    async def cut_short(items: Any = (), meta: RunMeta | None = None) -> None:
        if meta is not None and meta.checked_list is not None:
            await real_commit(items)  # the item lines made it to disk, the meta line did not
            raise KeyboardInterrupt
        await real_commit(items, meta)

    monkeypatch.setattr(store, "commit", cut_short)
    with pytest.raises(KeyboardInterrupt):
        await save_list(store, str(source.path), edited, merge_list(store.items, edited.rows))
    store.close()
    again = CheckpointStore(state)
    again.open()
    source = read_list(write(tmp_path, ROWS), CONFIG)
    assert recall(again.meta.checked_list, source, again.items) is None
    again.close()


# -- end to end: the CLI's main, run twice, in process on virtual time ----------------------------


@pytest.fixture
def cloud(local_cloud: LocalCloud) -> LocalCloud:
    """The world, its list and config; runs by ``main(argv)`` against the in-memory cloud."""
    return local_cloud


def loaded_events(cloud: LocalCloud) -> list[dict[str, Any]]:
    lines = (cloud.state_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "run.loaded"]


def bad_rows(cloud: LocalCloud) -> list[str]:
    lines = (cloud.state_dir / "events.jsonl").read_text().splitlines()
    return [e["error_message"] for e in map(json.loads, lines) if e["event"] == "list.bad_row"]


def test_a_second_run_of_the_same_list_recalls_it_and_says_the_same(cloud: LocalCloud) -> None:
    for name in ("t0", "t1"):
        cloud.account(name)
    cloud.row("t0", 1)
    cloud.row("t1", 1)
    cloud.rows.append(dict(cloud.rows[0], image_id="not an id"))
    cloud.start()
    first = cloud.run()
    assert first.returncode == 1, first.stderr
    report = (cloud.state_dir / "report.csv").read_text()
    second = cloud.run()
    assert second.returncode == 1, second.stderr
    assert [e["list_checked"] for e in loaded_events(cloud)] == [True, False]
    said = bad_rows(cloud)
    assert len(said) == 2
    assert said[0] == said[1]
    assert "not an image id" in said[0]
    assert "not an image id" in second.stderr
    assert (cloud.state_dir / "report.csv").read_text() == report


def test_a_changed_config_or_list_is_checked_again(cloud: LocalCloud) -> None:
    for name in ("t0", "t1"):
        cloud.account(name)
    cloud.row("t0", 1)
    cloud.row("t1", 1)
    added = cloud.image("t0", 2)  # listed later
    cloud.start()
    assert cloud.run("--tenant", "t0").returncode == 0
    # t1 leaves the config: its row is now a bad row, although the list did not change.
    config = cloud.config_path.read_text()
    cloud.config_path.write_text(config.split("[tenants.t1]")[0])
    dropped = cloud.run()
    assert dropped.returncode == 1, dropped.stderr
    assert any('"t1" is not configured' in message for message in bad_rows(cloud))
    cloud.config_path.write_text(config)
    cloud.rows.append(dict(cloud.rows[0], image_id=added))
    cloud.write_list()
    assert cloud.run().returncode == 0
    assert [e["list_checked"] for e in loaded_events(cloud)] == [True, True, True]
    assert {c.image_id for c in cloud.truth().copies} == {r["image_id"] for r in cloud.rows}
    assert added in (cloud.state_dir / "report.csv").read_text()
