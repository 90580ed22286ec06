"""What a large list costs in memory: items and rows in slots, one key string per row, and
nothing kept alive by a reference cycle that the run would freeze (state/gcpause.py)."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from orchestrator.cli.run import RunWatch
from orchestrator.commands.run import execute_run
from orchestrator.core.aftercopy import facts_text
from orchestrator.core.cloud import Image
from orchestrator.core.model import Item, Phase, Row
from orchestrator.manifest import load_manifest
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.codec import item_from_dict, item_to_dict
from tests.inprocess import LocalCloud
from tests.test_manifest import CONFIG, load_csv
from tests.virtual_clock import VirtualClock


def test_items_and_rows_have_no_instance_dict() -> None:
    row = Row(line=2, tenant="t", image_id="img-1", source_region="a", target_region="b")
    item = Item(row=row)
    assert not hasattr(row, "__dict__")
    assert not hasattr(item, "__dict__")
    loaded = item_from_dict(item_to_dict(item))
    assert not hasattr(loaded, "__dict__")
    assert not hasattr(loaded.row, "__dict__")


def test_a_row_makes_its_key_once_and_every_version_of_its_item_shares_it() -> None:
    row = Row(
        line=9, tenant="t", image_id="img-1", source_region="a", target_region="b", line_tag="#x"
    )
    assert row.key == "t/img-1/b#x"
    assert row.key is row.key
    item = Item(row=row)
    later = item.advance(Phase.SUBMITTING).advance(Phase.RUNNING, job_id="j")
    assert later.key is item.key is row.key


def test_the_key_is_not_a_field_compared_or_shown() -> None:
    one = Row(line=1, tenant="t", image_id="i", source_region="a", target_region="b")
    two = Row(line=1, tenant="t", image_id="i", source_region="a", target_region="b")
    assert one.key == two.key  # one made, the other not yet
    assert one == two
    assert hash(one) == hash(two)
    assert "key" not in repr(two)


def test_images_of_one_template_share_one_facts_text() -> None:
    """Every item keeps its source's facts for the whole run (verified after the copy)."""
    facts = (("__os_type", "Linux"), ("min_ram", "0"))
    one = Image(id="a", name="a", status="active", facts=facts, tags_listed=True)
    two = Image(id="b", name="b", status="active", facts=facts, tags_listed=True)
    assert facts_text(one) is facts_text(two)
    other = Image(id="c", name="c", status="active", facts=(("min_ram", "1024"),))
    assert facts_text(other) != facts_text(one)


def test_reading_a_list_leaves_no_cycle_behind(tmp_path: Path) -> None:
    """The run reads its list with the collector paused, then freezes what is alive out of
    its sight: garbage in a cycle then would stay for the whole run (a key per row)."""
    load_csv(tmp_path, "image_id,source_region,target_region", "img-1,lab-1,lab-1")  # warm up
    path = tmp_path / "list.csv"
    path.write_text(
        "tenant,image_id,source_region,target_region\n"
        + "".join(f"prod,img-{n},cn-north-4,cn-east-3\n" for n in range(50))
        + "prod,img-1,cn-north-4,cn-east-3\n",  # a duplicate: a problem is reported too
        encoding="utf-8",
    )
    gc.collect()
    gc.disable()
    try:
        manifest = load_manifest(path, CONFIG)
        assert len(manifest.rows) == 50
        assert len(manifest.problems) == 1
        assert gc.collect() == 0
    finally:
        gc.enable()


async def _watched_run(local_cloud: LocalCloud, mode: str, metrics: Path | None) -> RunWatch:
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=3)
    cloud.start()
    assert cloud.world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    watch = RunWatch(mode, Console(file=io.StringIO()), cloud.list_path, metrics, clock=clock)
    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        summary = await execute_run(
            request,
            clouds=in_memory_clouds(cloud.world),
            clock=clock,
            on_change=watch.on_change,
            on_start=watch.on_start,
            handle_signals=False,
        )
        group.cancel_scope.cancel()
    assert len(summary.items) == 6  # the report's rows, from the store (the outcome is not
    assert summary.items[0].phase != Phase.PENDING  # the point: the run went its course)
    return watch


@pytest.mark.anyio
async def test_a_run_shown_nowhere_keeps_no_copy_of_its_items(local_cloud: LocalCloud) -> None:
    """``--progress none`` without a metrics file: nothing reads a progress model."""
    watch = await _watched_run(local_cloud, "none", None)
    assert watch.model is None


@pytest.mark.anyio
async def test_a_run_with_metrics_keeps_its_progress(
    local_cloud: LocalCloud, tmp_path: Path
) -> None:
    watch = await _watched_run(local_cloud, "none", tmp_path / "m.prom")
    assert watch.model is not None
    assert len(watch.model.items) == 6
    assert "ims_migrate" in (tmp_path / "m.prom").read_text()


def test_items_that_reach_one_step_share_its_detail_text() -> None:
    """Every item keeps its last detail for the whole run: ``copied`` once, not per item."""
    rows = [Row(line=n, tenant="t", image_id=f"i{n}", source_region="a", target_region="b")
            for n in (1, 2)]  # fmt: skip
    done = [
        Item(row=row, phase=Phase.CARRYING).advance(Phase.SUCCEEDED, detail="".join(["cop", "ied"]))
        for row in rows
    ]
    assert done[0].detail == "copied"
    assert done[0].detail is done[1].detail
