"""When the journal is folded into a new snapshot: once it has grown to COMPACT_RATIO times
the snapshot's size, so that the snapshots a run writes cost at most 1 / COMPACT_RATIO of its
journal's bytes, and the journal a resume reads stays within that multiple of the snapshot."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from orchestrator.core.model import Item, Phase, Row
from orchestrator.state.checkpoint import (
    COMPACT_RATIO,
    JOURNAL,
    SNAPSHOT,
    CheckpointStore,
    read_snapshot,
)


def items(count: int) -> list[Item]:
    return [
        Item(
            row=Row(
                line=n + 2,
                tenant=f"t{n % 3}",
                image_id=f"img-{n:05d}",
                source_region="r1",
                target_region="r2",
            )
        )
        for n in range(count)
    ]


class Watched(CheckpointStore):
    """Records, at each compaction, the journal's and the snapshot's sizes on disk before it."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, compact_min=10)
        self.folds: list[tuple[int, int]] = []
        self.snapshot_bytes_written = 0

    def _compact(self, *, abandon: bool = False) -> None:
        journal = (self.state_dir / JOURNAL).stat().st_size
        self.folds.append((journal, (self.state_dir / SNAPSHOT).stat().st_size))
        super()._compact(abandon=abandon)
        self.snapshot_bytes_written += (self.state_dir / SNAPSHOT).stat().st_size


async def test_the_journal_is_folded_once_it_is_a_multiple_of_the_snapshot(
    tmp_path: Path,
) -> None:
    """A state change per commit over a list of 300: each fold comes once the journal holds
    COMPACT_RATIO times the snapshot's bytes (not as soon as it has a line per item), and
    never much later; the snapshots written add up to at most 1 / COMPACT_RATIO of the
    journal's bytes."""
    store = Watched(tmp_path)
    store.open()
    listed = items(300)
    await store.commit(listed)
    store.folds.clear()
    store.snapshot_bytes_written = 0
    line = 0
    for round_ in range(8):
        for item in listed:
            before = (tmp_path / JOURNAL).stat().st_size
            await store.commit([replace(item, polls=round_, detail=f"copying {round_}")])
            line = max(line, (tmp_path / JOURNAL).stat().st_size - before)
    store.close()
    assert len(store.folds) >= 2
    for journal, snapshot in store.folds:
        assert COMPACT_RATIO * snapshot <= journal < COMPACT_RATIO * snapshot + line
    journal_written = sum(journal for journal, _ in store.folds)
    journal_written += (tmp_path / JOURNAL).stat().st_size
    # (Each snapshot written is a little larger than the one before it: the details grow.)
    assert store.snapshot_bytes_written <= 1.1 * journal_written / COMPACT_RATIO


async def test_a_resumed_run_appends_to_the_journal_it_finds(tmp_path: Path) -> None:
    """The journal a stopped run left is not folded in by the next run's first write (a
    100,000-item rewrite as the resume begins) but counted: the next run appends to it, and
    folds it in once it has grown to COMPACT_RATIO times the snapshot. Nothing is lost."""
    listed = items(40)
    store = CheckpointStore(tmp_path, compact_min=10)
    store.open()
    await store.commit(listed)  # folded at once: the snapshot holds the 40 items
    await store.commit([listed[0].advance(Phase.SUBMITTING)])
    store.close()
    snapshot = (tmp_path / SNAPSHOT).read_bytes()
    resumed = CheckpointStore(tmp_path, compact_min=10)
    resumed.open()
    await resumed.commit([listed[1].advance(Phase.SUBMITTING)])
    assert resumed.compactions == 0
    assert (tmp_path / SNAPSHOT).read_bytes() == snapshot
    assert len((tmp_path / JOURNAL).read_bytes().splitlines()) == 2
    for n in range(math.ceil(len(listed) * COMPACT_RATIO)):
        await resumed.commit([replace(resumed.items[listed[n % len(listed)].key], polls=n)])
    resumed.close()
    assert resumed.compactions == 1
    snap = read_snapshot(tmp_path)
    assert snap is not None
    assert snap["items"][listed[0].key]["phase"] == "submitting"
    assert snap["items"][listed[1].key]["phase"] == "submitting"
    assert len(snap["items"]) == 40
