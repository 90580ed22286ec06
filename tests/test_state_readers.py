"""The state's fast readers give what json gives: the journal read in blocks and parsed by
orjson, the snapshot streamed a line at a time; whatever orjson refuses (``NaN``, damage) is
read by json, in json's words."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.state import damage
from orchestrator.state.damage import checked, read_journal
from orchestrator.state.snapshot import parse_snapshot, read_snapshot_file, render_snapshot
from orchestrator.state.store import StateDamaged


def item(n: int, phase: str = "pending", **extra: Any) -> dict[str, Any]:
    row = {"line": n + 2, "tenant": f"t{n % 3}", "image_id": f"img-{n}", "target_region": "r2"}
    return {"row": {**row, "source_region": "r1"}, "phase": phase, "attempt": 1, **extra}


def key(value: dict[str, Any]) -> str:
    row = value["row"]
    return f"{row['tenant']}/{row['image_id']}/{row['target_region']}"


def reference(path: Path, generation: int) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """The journal as the store's format defines it, read line by line with json: each key's
    last item and the meta merged, or the damage's line ("file:N") for a bad line that is not
    the last."""
    items: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            return f"{path}:{number}"
        if entry["g"] != generation:
            continue
        if "item" in entry:
            items[key(entry["item"])] = entry["item"]  # in the order of their first lines
        meta.update(entry.get("meta", {}))
    return items, meta


def read(path: Path, generation: int) -> tuple[dict[str, Any], dict[str, Any]] | str:
    journal = read_journal(path, generation, None)
    if journal.damage is not None:
        return str(journal.damage).split(": ", 1)[0]
    return journal.items, journal.meta


LINES = st.lists(
    st.one_of(
        st.tuples(st.just("item"), st.integers(0, 6), st.sampled_from([1, 2])),
        st.tuples(st.just("meta"), st.integers(0, 6), st.sampled_from([1, 2])),
        st.tuples(st.just("nan"), st.integers(0, 6), st.just(2)),
        st.tuples(st.just("bad"), st.integers(0, 6), st.just(2)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    lines=LINES,
    block=st.integers(1, 400),
    batch=st.integers(1, 7),
    end=st.sampled_from(["newline", "torn", "none"]),
)
def test_the_journal_reads_as_json_reads_it_line_by_line(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[tuple[str, int, int]],
    block: int,
    batch: int,
    end: str,
) -> None:
    """Any lines (of two generations, meta, a NaN that orjson refuses, damage), read in blocks
    and batches of any size, whatever ends the file: the items, their order and the meta json
    gives, or the same damaged line."""
    path = tmp_path_factory.mktemp("journal") / "journal.jsonl"
    text: list[str] = []
    for kind, n, g in lines:
        if kind == "item":
            text.append(json.dumps({"g": g, "item": item(n, phase="running", polls=len(text))}))
        elif kind == "meta":
            text.append(json.dumps({"g": g, "meta": {f"k{n}": len(text)}}))
        elif kind == "nan":
            text.append(json.dumps({"g": g, "item": item(n, submitted_at=math.nan)}))
        else:
            text.append('{"g":2,"item":')
    body = "\n".join(text)
    if text and end == "newline":
        body += "\n"
    elif text and end == "torn":
        body += '\n{"g":2,"it'
    path.write_text(body)
    with (
        patch.object(damage, "JOURNAL_BLOCK", block),
        patch.object(damage, "JOURNAL_BATCH", batch),
    ):
        got = read(path, 2)
    want = reference(path, 2)
    assert repr(got) == repr(want)  # repr: NaN is not equal to itself


def test_a_line_orjson_refuses_but_json_reads_is_read(tmp_path: Path) -> None:
    """json writes a float NaN as ``NaN``, which orjson refuses: json reads the batch."""
    path = tmp_path / "journal.jsonl"
    lines = [{"g": 1, "item": item(0)}, {"g": 1, "item": item(1, submitted_at=math.nan)}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal = read_journal(path, 1, None)
    assert journal.damage is None
    assert math.isnan(journal.items[key(item(1))]["submitted_at"])


def snapshot_bytes(items: list[dict[str, Any]], chunk: int = 2) -> bytes:
    head = {"version": 1, "generation": 3, "meta": {}}
    with patch("orchestrator.state.snapshot.SNAPSHOT_CHUNK", chunk):
        return b"".join(render_snapshot(head, items, lambda value: value, key))


def either(read: Any) -> Any:
    try:
        return read()
    except (ValueError, StateDamaged) as exc:
        return type(exc).__name__, str(exc)


def build(value: Any) -> Any:
    """A converter that refuses what the codec refuses (a missing phase)."""
    return dict(value, built=value["phase"])


LAYOUTS: dict[str, Callable[[bytes], bytes]] = {
    "as written": lambda raw: raw,
    "no items": lambda raw: snapshot_bytes([]),
    "a NaN": lambda raw: raw.replace(b'"attempt":1', b'"attempt":NaN', 1),
    "a comma before the end": lambda raw: raw.replace(b"\n}}", b",\n}}"),
    "blank after the end": lambda raw: raw + b"\n",
    "a blank line": lambda raw: raw.replace(b",\n", b",\n\n", 1),
    "a line without its comma": lambda raw: raw.replace(b",\n", b"\n", 1),
    "a torn line": lambda raw: raw[: raw.rindex(b"\n}}") - 20] + b"\n}}",
    "not UTF-8": lambda raw: raw.replace(b"img-3", b"img-\xff", 1),
    "an item without phase": lambda raw: raw.replace(b'"phase":"pending",', b"", 1),
    "on one line": lambda raw: raw.replace(b"\n", b""),
    "no end": lambda raw: raw[: raw.rindex(b"\n}}")],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_snapshot_streamed_is_what_it_is_read_whole(tmp_path: Path, layout: str) -> None:
    """Read a line at a time or whole: the same items (converted, or only checked where the
    journal replaces them) and head, or the same error in the same words."""
    raw = LAYOUTS[layout](snapshot_bytes([item(n) for n in range(7)]))
    path = tmp_path / "checkpoint.json"
    path.write_bytes(raw)
    convert = checked(path, build)
    replaced = {key(item(2)), key(item(5))}
    streamed = either(lambda: read_snapshot_file(path, convert, replaced, lambda value: None))
    whole = either(lambda: parse_snapshot(raw, convert, replaced, lambda value: None))
    assert repr(streamed) == repr(whole)
    if layout == "as written":
        assert isinstance(streamed, dict)
        assert streamed["items"][key(item(0))]["built"] == "pending"
        assert streamed["items"][key(item(2))] is None


def test_damage_is_named_in_the_order_of_the_lines(tmp_path: Path) -> None:
    """A bad item on line 1 and a line that is not JSON on line 2, in one batch: line 1 is
    named, as a reader of one line after the other would."""
    path = tmp_path / "journal.jsonl"
    lines = [
        json.dumps({"g": 1, "item": item(0, phase="bogus")}),
        '{"g":1,"item":',
        json.dumps({"g": 1, "item": item(1)}),
    ]
    path.write_text("\n".join(lines) + "\n")
    journal = read_journal(path, 1, None)
    assert str(journal.damage).startswith(f"{path}:1: an item's phase 'bogus'")
