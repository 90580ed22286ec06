"""The table at the end of a run: a screen, not a scroll, for a list of 1,000 tenants."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.cli.common import summary_table
from orchestrator.core.model import Item, Phase, Row


def _item(tenant: str, n: int, phase: Phase) -> Item:
    row = Row(line=n + 2, tenant=tenant, image_id=f"img-{n}", source_region="a", target_region="b")
    return Item(row, phase=phase)


def _shown(items: list[Item], most: int | None) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(items, most=most))
    return out.getvalue()


def test_at_most_so_many_tenants_those_with_work_left_first() -> None:
    items = [_item(f"t{t:03d}", t, Phase.SUCCEEDED) for t in range(60)]
    items += [_item("t055", 100, Phase.PENDING), _item("t058", 101, Phase.FAILED)]
    text = _shown(items, most=10)
    lines = [line for line in text.splitlines() if "│ t" in line or "more tenants" in line]
    assert len(lines) == 11
    assert "t055" in lines[0]  # work left or a problem: shown first
    assert "t058" in lines[1]
    assert "t000" in lines[2]
    assert "(50 more tenants)" in lines[-1]
    assert lines[-1].split("│")[2].strip() == "50"  # their succeeded items, summed
    assert "62 items" in text


def test_every_tenant_when_they_fit_or_when_asked() -> None:
    items = [_item(f"t{t:03d}", t, Phase.SUCCEEDED) for t in range(60)]
    assert "more tenants" not in _shown(items, most=60)
    assert "more tenants" not in _shown(items, most=None)  # status shows them all
