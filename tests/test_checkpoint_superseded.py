"""A resumed run reads its journal first: a snapshot's item that a journal line replaces is
looked at, not built (a stopped 100,000-item run leaves a third of its items so), and the load
gives the same items, and the same damage reports, as building every one of them would."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.model import Item, Phase
from orchestrator.state import checkpoint
from orchestrator.state.checkpoint import JOURNAL, SNAPSHOT, CheckpointStore, read_snapshot
from orchestrator.state.codec import item_from_dict, item_readable, item_to_dict
from orchestrator.state.store import StateDamaged
from tests.test_model import make_row

SNAPSHOT_ITEMS = 6
REPLACED = ("img-1", "img-4")  # each with two journal lines: only the last one counts


async def stopped_state(state_dir: Path) -> None:
    """A snapshot of six items (as the store lays it out), then a journal that replaces two of
    them (two lines each) and adds one: what a stopped run leaves."""
    store = CheckpointStore(state_dir, compact_min=1000)
    store.open()
    items = [Item(row=make_row(f"img-{n}", line=n + 2)) for n in range(SNAPSHOT_ITEMS)]
    await store.commit(items)
    store.compact_now()
    for image_id in REPLACED:
        item = store.items[make_row(image_id).key]
        submitting = item.advance(Phase.SUBMITTING, submitted_at=1.0)
        await store.commit([submitting])
        await store.commit([submitting.advance(Phase.RUNNING, job_id=f"job-{image_id}")])
    await store.commit([Item(row=make_row("img-new", line=20))])
    store.close()
    assert (state_dir / JOURNAL).read_text().count("\n") == 2 * len(REPLACED) + 1


def counting(convert: Callable[[Any], Item], built: list[str]) -> Callable[[Any], Item]:
    def count(data: Any) -> Item:
        item = convert(data)
        built.append(item.key)
        return item

    return count


def open_store(state_dir: Path) -> CheckpointStore:
    store = CheckpointStore(state_dir)
    try:
        store.open()
    finally:
        store.close()
    return store


def as_text(items: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(key, item_to_dict(item)) for key, item in items.items()]


async def test_an_item_the_journal_replaces_is_not_built_from_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the store builds each item once: the replaced ones from their last journal line
    only. Same items, in the same order, as reading every snapshot item first."""
    await stopped_state(tmp_path)
    every = read_snapshot(tmp_path, item_from_dict)  # no ``readable``: everything is built
    assert every is not None
    built: list[str] = []
    monkeypatch.setattr(checkpoint, "item_from_dict", counting(item_from_dict, built))
    store = open_store(tmp_path)
    assert sorted(built) == sorted(store.items)  # once each: 7, not 7 + 2
    assert len(built) == SNAPSHOT_ITEMS + 1
    assert as_text(dict(store.items)) == as_text(every["items"])
    replaced = [store.items[make_row(image_id).key] for image_id in REPLACED]
    assert [(item.phase, item.job_id) for item in replaced] == [
        (Phase.RUNNING, "job-img-1"),
        (Phase.RUNNING, "job-img-4"),
    ]


def damage_snapshot_item(state_dir: Path, image_id: str, change: Callable[[Any], Any]) -> None:
    """Rewrite one item in checkpoint.json, keeping the store's layout (the fast reader)."""
    path = state_dir / SNAPSHOT
    lines = path.read_text().split("\n")
    key = make_row(image_id).key
    for at, line in enumerate(lines[1:-1], start=1):
        comma = line.endswith(",")
        members = json.loads("{" + line.removesuffix(",") + "}")
        if key in members:
            members[key] = change(members[key])
            text = json.dumps(members, separators=(",", ":"))[1:-1]
            lines[at] = text + ("," if comma else "")
    path.write_text("\n".join(lines))


def without_line(item: dict[str, Any]) -> dict[str, Any]:
    """A row without its line number: not found by the shape check, only by building it."""
    return item | {"row": {k: v for k, v in item["row"].items() if k != "line"}}


DAMAGE: dict[str, Callable[[Any], Any]] = {
    "a row without its line": without_line,
    "a bogus phase": lambda item: item | {"phase": "bogus"},
    "a phase list": lambda item: item | {"phase": ["running"]},
    "a phase object": lambda item: item | {"phase": {"running": 1}},
    "no row": lambda item: {k: v for k, v in item.items() if k != "row"},
    "a number": lambda _item: 5,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
async def test_a_damaged_snapshot_item_is_loud_though_the_journal_replaces_it(
    tmp_path: Path, kind: str
) -> None:
    """The rule stays: damage in checkpoint.json stops the load, naming it, whether or not a
    journal line replaces the damaged item: the same words as with no journal at all."""
    await stopped_state(tmp_path)
    damage_snapshot_item(tmp_path, REPLACED[0], DAMAGE[kind])
    with pytest.raises(StateDamaged) as with_journal:
        open_store(tmp_path)
    (tmp_path / JOURNAL).unlink()
    with pytest.raises(StateDamaged) as without_journal:
        open_store(tmp_path)
    assert str(with_journal.value) == str(without_journal.value)
    assert str(with_journal.value).startswith(f"{tmp_path / SNAPSHOT}: ")


async def test_the_snapshots_damage_is_reported_before_the_journals(tmp_path: Path) -> None:
    """Both files damaged: checkpoint.json is named, as when it was read first (the journal,
    read first now, keeps its damage until the snapshot is read)."""
    await stopped_state(tmp_path)
    damage_snapshot_item(tmp_path, "img-2", without_line)  # an item the journal leaves be
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    lines[0] = "5"
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    with pytest.raises(StateDamaged, match=rf"^{tmp_path / SNAPSHOT}: an item cannot be read"):
        open_store(tmp_path)
    damage_snapshot_item(tmp_path, "img-2", lambda item: item | {"row": {"line": 1} | item["row"]})
    with pytest.raises(StateDamaged, match=rf"^{tmp_path / JOURNAL}:1: "):
        open_store(tmp_path)


def without_field(data: dict[str, Any], name: str) -> dict[str, Any]:
    return data | {"row": {k: v for k, v in data["row"].items() if k != name}}


def item_dict() -> dict[str, Any]:
    item = Item(row=make_row(), phase=Phase.RUNNING, job_id="j-1", detail="copying")
    return item_to_dict(item)


READABLE_OR_NOT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "as stored": lambda d: d,
    "a number": lambda _d: 5,
    "a list of pairs": lambda d: list(d.items()),
    "a text": lambda _d: "item",
    "no row": lambda d: {k: v for k, v in d.items() if k != "row"},
    "a row list": lambda d: d | {"row": [1]},
    "no phase": lambda d: {k: v for k, v in d.items() if k != "phase"},
    "a bogus phase": lambda d: d | {"phase": "bogus"},
    "a phase list": lambda d: d | {"phase": ["running"]},
    "a phase number": lambda d: d | {"phase": 1},
    "an unknown field": lambda d: d | {"newer": 1},
    "a field of another type": lambda d: d | {"attempt": "two"},
}
for _name in ("line", "tenant", "image_id", "source_region", "target_region", "name"):
    READABLE_OR_NOT[f"no row {_name}"] = functools.partial(without_field, name=_name)


@pytest.mark.parametrize("kind", sorted(READABLE_OR_NOT))
def test_readable_says_whether_an_item_would_be_built(kind: str) -> None:
    """``item_readable`` is True exactly when ``item_from_dict`` builds an item."""
    data = READABLE_OR_NOT[kind](item_dict())
    try:
        item_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        builds = False
    else:
        builds = True
    assert item_readable(data) is builds


def long_journal(state_dir: Path, lines: int) -> list[str]:
    """A state dir of an empty snapshot and a journal of ``lines`` item lines (several of the
    reader's batches), each a new phase of one of 100 items."""
    open_store(state_dir)  # the snapshot, generation 0
    out = []
    for n in range(lines):
        item = Item(row=make_row(f"img-{n % 100}"), phase=Phase.SUBMITTING, polls=n)
        out.append(json.dumps({"g": 0, "item": item_to_dict(item)}, separators=(",", ":")))
    (state_dir / JOURNAL).write_text("\n".join(out) + "\n")
    return out


def test_a_long_journal_reads_each_items_last_line(tmp_path: Path) -> None:
    """Read a batch of lines at a time, a journal of 2,500 gives each item its last line."""
    long_journal(tmp_path, 2500)
    items = open_store(tmp_path).items
    assert len(items) == 100
    assert {item.polls for item in items.values()} == set(range(2400, 2500))


@pytest.mark.parametrize("number", [1, 999, 1000, 1001, 2000, 2499])
@pytest.mark.parametrize("damage", ["not JSON", "no generation", "no row"])
def test_a_damaged_line_of_a_long_journal_is_named(
    tmp_path: Path, number: int, damage: str
) -> None:
    """Wherever it falls among the reader's batches, a damaged line that is not the last one
    is named by its number, and what is wrong with it."""
    lines = long_journal(tmp_path, 2500)
    entry = json.loads(lines[number - 1])
    if damage == "not JSON":
        lines[number - 1] = lines[number - 1][:-5]
        why = "not valid JSON"
    elif damage == "no generation":
        lines[number - 1] = json.dumps({"item": entry["item"]})
        why = "no generation number"
    else:
        lines[number - 1] = json.dumps({"g": 0, "item": {"phase": "pending"}})
        why = "an item has no row object"
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    with pytest.raises(StateDamaged, match=rf"^{tmp_path / JOURNAL}:{number}: {why}"):
        open_store(tmp_path)


@pytest.mark.parametrize("lines", [1000, 1001, 2500])
def test_a_torn_last_line_of_a_long_journal_is_cut_off(tmp_path: Path, lines: int) -> None:
    """Also when the torn line begins a batch of its own, or ends a full one."""
    text = long_journal(tmp_path, lines)
    (tmp_path / JOURNAL).write_text("\n".join(text[:-1]) + "\n" + text[-1][:30])
    items = open_store(tmp_path).items
    assert max(item.polls for item in items.values()) == lines - 2


async def test_a_snapshot_replaced_after_its_first_line_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``status`` reads without the lock: a compaction may replace checkpoint.json between its
    first line (whose generation chose the journal's lines) and the rest. Read again."""
    await stopped_state(tmp_path)
    every = read_snapshot(tmp_path, item_from_dict)
    assert every is not None
    older = {"generation": every["generation"] - 1}  # what the first line said, before
    monkeypatch.setattr(checkpoint, "read_head", lambda _path: older)
    again = read_snapshot(tmp_path, item_from_dict, item_readable)
    assert again is not None
    assert as_text(again["items"]) == as_text(every["items"])
