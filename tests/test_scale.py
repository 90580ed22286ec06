"""Costs that must not grow with the list: checkpoint writes, preflight requests, resuming.

The 100,000-row figures come from ``scripts/bench scale`` (not CI); these tests pin the
mechanisms on lists small enough for CI.
"""

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.model import Item, Phase, Row
from orchestrator.engine import scheduler
from orchestrator.engine.preflight import preflight
from orchestrator.engine.scheduler import RunOptions
from orchestrator.engine.targets import Found, TargetIndex
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.world import World
from orchestrator.state.checkpoint import JOURNAL, CheckpointStore, read_snapshot
from orchestrator.state.codec import item_from_dict
from orchestrator.state.meta import RunMeta
from orchestrator.state.snapshot import parse_snapshot, render_snapshot
from orchestrator.state.store import InMemoryStore
from tests.engine_harness import CONFIG, SOURCE, TARGET, Scene


def rows(count: int, tenants: int = 1) -> list[Item]:
    return [
        Item(
            row=Row(
                line=n + 2,
                tenant=f"t{n % tenants}",
                image_id=f"img-{n:06d}",
                source_region=SOURCE,
                target_region=TARGET,
            )
        )
        for n in range(count)
    ]


def journal_lines(state_dir: Path) -> int:
    return len((state_dir / JOURNAL).read_bytes().splitlines())


async def test_a_state_change_appends_one_line_and_compaction_is_amortised(
    tmp_path: Path,
) -> None:
    """Each commit appends one journal line whatever the list's size; the snapshot is rewritten
    only once the journal holds COMPACT_RATIO (1.5) lines per item, so the cost per change
    stays constant."""
    store = CheckpointStore(tmp_path, compact_min=50)
    store.open()
    items = rows(200)
    await store.commit(items)  # 200 lines: not yet 1.5 per item
    assert store.compactions == 0
    assert journal_lines(tmp_path) == 200
    sizes = []
    for n, item in enumerate(items * 2):
        before = (tmp_path / JOURNAL).stat().st_size
        await store.commit([replace(item, polls=n % 7, detail="copying")])
        after = (tmp_path / JOURNAL).stat().st_size
        if after > before:
            sizes.append(after - before)
    assert store.compactions == 2  # 600 lines: one snapshot per 1.5 x 200
    assert max(sizes) - min(sizes) < 16  # one line each, of about the same size
    snap = read_snapshot(tmp_path)
    assert snap is not None
    assert len(snap["items"]) == 200
    store.close()


async def test_concurrent_state_changes_share_fsyncs(tmp_path: Path) -> None:
    """Changes committed at the same time are made durable together (group commit)."""
    store = CheckpointStore(tmp_path)
    store.open()
    items = rows(400)
    await store.commit(items)
    before = store.fsyncs
    async with anyio.create_task_group() as group:
        for item in items:
            group.start_soon(store.commit, [replace(item, detail="copying")])
    assert store.fsyncs - before < len(items) / 4
    store.close()


async def test_preflight_of_ten_thousand_rows_lists_page_by_page() -> None:
    """10,000 rows of one tenant and region are checked with tens of requests, not thousands."""
    world = World(WorldParams(regions=(SOURCE, TARGET)))
    world.add_account("t0", "dom-t0", "AKt0", "SKt0")
    items = []
    for item in rows(10_000):
        image = world.add_image("t0", SOURCE, {"name": f"n{item.row.line}", "min_disk": 1})
        items.append(replace(item, row=replace(item.row, image_id=image["id"])))
    cloud = InMemoryTenantCloud(world, "t0", lambda: 1_800_000_000.0)
    result = await preflight(items, {"t0": cloud}, CONFIG)
    assert {item.phase for item in result.items} == {Phase.PENDING}
    assert all(item.copy_name for item in result.items)
    assert sum(world.requests.values()) <= 30


async def test_preflight_lists_a_region_once_for_its_sources_and_its_copies() -> None:
    """A tenant copying both ways between two regions: each region's listing shows the sources
    judged there and the copies already made there, so it is taken once, not once per role
    (400 tenants x 4 regions: 1,600 requests less). Both roles are served: each source is
    found, and a copy already made is adopted, not submitted again."""
    world = World(WorldParams(regions=(SOURCE, TARGET)))
    world.add_account("t0", "dom-t0", "AKt0", "SKt0")
    items = []
    for n, (source, target) in enumerate([(SOURCE, TARGET), (TARGET, SOURCE)] * 3):
        image = world.add_image("t0", source, {"name": f"n{n}", "min_disk": 1})
        row = Row(
            line=n + 2,
            tenant="t0",
            image_id=image["id"],
            source_region=source,
            target_region=target,
        )
        items.append(Item(row=row))
    made = items[1]  # its copy is in SOURCE already, where other items' sources are
    copy = world.add_image(
        "t0", SOURCE, {"name": "n1", "min_disk": 1, "__description": f"[{made.token}]"}
    )
    cloud = InMemoryTenantCloud(world, "t0", lambda: 1_800_000_000.0)
    index = TargetIndex({"t0": cloud}, lambda: 1_800_000_000.0, settle=60.0)
    result = await preflight(items, {"t0": cloud}, CONFIG, index)
    assert world.requests["list"] == 2  # one per region, not one per region and role
    phases = {item.key: item.phase for item in result.items}
    assert phases.pop(made.key) == Phase.VERIFYING
    assert set(phases.values()) == {Phase.PENDING}
    assert index.found_in_first(made) == Found(copy["id"], "active")


class CountingStore(InMemoryStore):
    """Remembers how many items each commit carried."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        items = list(items)
        self.batches.append(len(items))
        await super().commit(items, meta)


async def test_a_state_change_writes_only_that_item() -> None:
    """Past the start (the merged list, preflight's verdicts), every commit of a run carries a
    single item: nothing rewrites the list on each change."""
    scene = Scene(
        world=World(WorldParams(seconds_per_gib=1.0, fixed_seconds=60.0, init_seconds=10.0))
    )
    for t in range(20):
        scene.account(f"t{t}")
        for n in range(10):
            scene.row(f"t{t}", 1 + n)
    store = CountingStore()
    scene.store = store
    result = await scene.run()
    assert result.exit_code == 0
    assert store.batches[:2] == [200, 200]  # the merged list, then preflight's verdicts
    assert set(store.batches[2:]) == {1}
    # intent, job id, succeeded (with the verdict: nothing to carry from an untagged source
    # whose copy keeps its RAM limits; ``verifying`` not saved: its checks went on at once):
    # three per item
    assert len(store.batches) - 2 == 3 * 200


async def test_many_verdicts_are_saved_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new list's items and preflight's verdicts go to the journal SAVE_BATCH items per
    commit: 100,000 of them are never one batch of lines in memory."""
    monkeypatch.setattr(scheduler, "SAVE_BATCH", 30)
    scene = Scene(
        world=World(WorldParams(seconds_per_gib=1.0, fixed_seconds=60.0, init_seconds=10.0))
    )
    for t in range(4):
        scene.account(f"t{t}")
        for n in range(20):
            scene.row(f"t{t}", 1 + n)
    store = CountingStore()
    scene.store = store
    assert (await scene.run()).exit_code == 0
    assert store.batches[:6] == [30, 30, 20] * 2  # the merged list, then preflight's verdicts
    assert set(store.batches[6:]) == {1}


async def test_a_resumed_run_does_not_list_the_images_again() -> None:
    """Items checked by an earlier run are not checked again: the resumed run's listings are
    the one look at each finished copy in the target, plus one listing of each tenant's target
    region for the tokens of the items it may submit (design I2), not one per item."""
    scene = Scene()
    for t in range(3):
        scene.account(f"t{t}")
        for n in range(15):
            scene.row(f"t{t}", 5 + n)
    start = scene.clock.now()
    first = await scene.run(options=RunOptions(deadline_at=start + 500.0))
    assert first.exit_code == 75
    lists_before = scene.world.requests["list"]
    done_before = sum(state == "succeeded" for state in scene.states().values())
    second = await scene.run()
    assert second.exit_code == 0
    finished_now = len(scene.rows) - done_before
    targets = 3  # (tenant, target region) pairs
    assert scene.world.requests["list"] - lists_before == finished_now + targets
    assert scene.truth().duplicates == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
snapshots = st.fixed_dictionaries(
    {
        "items": st.dictionaries(
            st.text(max_size=6), st.dictionaries(st.text(max_size=3), json_values)
        )
    },
    optional={"version": st.integers(), "meta": json_values, "blocked": json_values},
)


def first(pair: tuple[str, Any]) -> str:
    return pair[0]


def second(pair: tuple[str, Any]) -> Any:
    return pair[1]


def identity(value: Any) -> Any:
    return value


def agrees_with_json_loads(text: str, cut: int) -> None:
    """The reader that converts items as it goes reads what json.loads reads, and refuses what
    json.loads refuses (the text cut short, or a line break turned into a space)."""
    assert parse_snapshot(text.encode(), identity) == json.loads(text)
    for bad in (text[: max(0, len(text) - cut)], text.replace(",\n", "\n", 1)):
        if bad == text:
            continue
        with pytest.raises(ValueError):  # noqa: PT011 -- json.loads raises a bare ValueError
            json.loads(bad)
        with pytest.raises(ValueError):  # noqa: PT011 -- ... and so must this reader
            parse_snapshot(bad.encode(), identity)


@settings(max_examples=60, deadline=None)
@given(snapshot=snapshots, indent=st.sampled_from([None, 0, 2]), cut=st.integers(1, 40))
def test_any_json_layout_reads_as_json_loads_reads_it(
    snapshot: dict[str, Any], indent: int | None, cut: int
) -> None:
    agrees_with_json_loads(json.dumps(snapshot, indent=indent), cut)


@settings(max_examples=60, deadline=None)
@given(snapshot=snapshots, cut=st.integers(1, 40), chunk=st.integers(1, 4))
def test_the_layout_written_reads_as_json_loads_reads_it(
    snapshot: dict[str, Any], cut: int, chunk: int
) -> None:
    """What render_snapshot writes (one line per chunk of items) is JSON, read line by line."""
    head = {k: v for k, v in snapshot.items() if k != "items"}
    items = list(snapshot["items"].items())
    with patch("orchestrator.state.snapshot.SNAPSHOT_CHUNK", chunk):
        text = b"".join(render_snapshot(head, items, second, first)).decode()
    assert text.count("\n") == 1 + -(-len(items) // chunk)
    agrees_with_json_loads(text, cut)


async def test_the_store_reads_back_what_it_wrote_in_parts(tmp_path: Path) -> None:
    """A snapshot written a thousand items at a time reads back item for item."""
    store = CheckpointStore(tmp_path)
    store.open()
    items = [replace(item, polls=n % 5) for n, item in enumerate(rows(2500))]
    await store.commit(items)
    store.compact_now()
    store.close()
    again = CheckpointStore(tmp_path)
    with patch("orchestrator.state.snapshot._parse_any", side_effect=AssertionError("slow reader")):
        again.open()  # the fast reader, line by line
    assert dict(again.items) == {item.key: item for item in items}
    again.close()


async def test_a_journal_is_read_in_batches_and_each_item_built_once(tmp_path: Path) -> None:
    """A stopped run leaves up to a line per item in the journal, five per copy: the resume
    builds each item once, from its last line (and the order of new items is kept)."""
    store = CheckpointStore(tmp_path, compact_min=10_000)
    store.open()
    items = rows(5)
    for phase in (Phase.SUBMITTING, Phase.RUNNING):
        await store.commit(
            [item.advance(Phase.SUBMITTING).advance(phase, job_id="j") for item in items]
        )
    store.close()
    built: list[str] = []

    def convert(value: Any) -> Any:
        built.append(value["row"]["image_id"])
        return item_from_dict(value)

    snap = read_snapshot(tmp_path, convert)
    assert snap is not None
    assert built == [item.row.image_id for item in items]
    assert list(snap["items"]) == [item.key for item in items]
    assert {item.phase for item in snap["items"].values()} == {Phase.RUNNING}
