"""When the journal is folded into a new snapshot: once it holds COMPACT_RATIO lines per item,
so that the snapshots a run writes (each encodes every item) cost at most 1 / COMPACT_RATIO of
its journal (each line encodes one), and the journal a resume reads stays within that many
lines per item."""

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
    """Records the journal's lines and the items at each compaction."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, compact_min=10)
        self.folds: list[tuple[int, int]] = []

    def _compact(self, *, abandon: bool = False) -> None:
        lines = len((self.state_dir / JOURNAL).read_bytes().splitlines())
        self.folds.append((lines, len(self.items)))
        super()._compact(abandon=abandon)


async def test_the_journal_is_folded_once_it_holds_a_multiple_of_the_items(
    tmp_path: Path,
) -> None:
    """A list of 300, then a state change per commit, 8 times over: each fold comes once the
    journal holds COMPACT_RATIO lines per item (not one), so 2,700 lines make 6 snapshots,
    not 9."""
    store = Watched(tmp_path)
    store.open()
    listed = items(300)
    await store.commit(listed)
    for round_ in range(8):
        for item in listed:
            await store.commit([replace(item, polls=round_, detail=f"copying {round_}")])
    store.close()
    assert store.folds == [(math.ceil(COMPACT_RATIO * 300), 300)] * 6
    assert store.compactions == 6


async def test_a_resumed_run_appends_to_the_journal_it_finds(tmp_path: Path) -> None:
    """The journal a stopped run left is not folded in by the next run's first write (a
    100,000-item rewrite as the resume begins) but counted: the next run appends to it, and
    folds it in once it holds COMPACT_RATIO lines per item. Nothing is lost."""
    listed = items(40)
    store = CheckpointStore(tmp_path, compact_min=10)
    store.open()
    await store.commit(listed)
    await store.commit([listed[0].advance(Phase.SUBMITTING)])
    store.close()
    snapshot = (tmp_path / SNAPSHOT).read_bytes()
    resumed = CheckpointStore(tmp_path, compact_min=10)
    resumed.open()
    await resumed.commit([listed[1].advance(Phase.SUBMITTING)])
    assert resumed.compactions == 0
    assert (tmp_path / SNAPSHOT).read_bytes() == snapshot
    assert len((tmp_path / JOURNAL).read_bytes().splitlines()) == 42
    for n in range(math.ceil(COMPACT_RATIO * len(listed)) - 42):
        await resumed.commit([replace(resumed.items[listed[n % len(listed)].key], polls=n)])
    resumed.close()
    assert resumed.compactions == 1
    assert (tmp_path / JOURNAL).read_bytes() == b""
    snap = read_snapshot(tmp_path)
    assert snap is not None
    assert snap["items"][listed[0].key]["phase"] == "submitting"
    assert snap["items"][listed[1].key]["phase"] == "submitting"
    assert len(snap["items"]) == 40
