"""The store's lines, written by orjson (state/jsonbytes.py), read back as the values saved:
a NaN or an infinity (which orjson would write as null), text outside ASCII, and what orjson
refuses (a key not a str, an int beyond 64 bits, a lone surrogate)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.model import Item, Phase
from orchestrator.state.checkpoint import JOURNAL, SNAPSHOT, CheckpointStore
from orchestrator.state.codec import item_to_dict
from orchestrator.state.jsonbytes import compact_json, dumps
from tests.test_codec import FULL, FULL_TEXT
from tests.test_model import make_row

_TEXT = st.text(max_size=6)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and the infinities included
    | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_TEXT | st.integers(0, 9), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=_VALUES)
def test_any_value_reads_back_as_json_wrote_it(value: Any) -> None:
    """Whatever orjson writes or refuses, the bytes read back (by json, the readers' fallback)
    as the value json's own text reads back as: NaN stays NaN, not None."""
    wrote = json.loads(compact_json(value))
    assert compact_json(json.loads(dumps(value))) == compact_json(wrote)


def test_an_item_line_is_the_text_json_wrote() -> None:
    """ASCII items (every line the benchmarks write) keep the very bytes of json's text."""
    assert dumps(item_to_dict(FULL)) == FULL_TEXT.encode()


def _reopened(state_dir: Path) -> CheckpointStore:
    store = CheckpointStore(state_dir)
    store.open()
    store.close()
    return store


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("compacted", [False, True], ids=["journal", "snapshot"])
@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_time_reads_back_as_saved(
    tmp_path: Path, odd: float, *, compacted: bool
) -> None:
    """A non-finite float in an item (the times are floats) is not written as null: read
    back from the journal or from a snapshot, it is the same float, not None."""
    store = CheckpointStore(tmp_path)
    store.open()
    item = Item(row=make_row("a")).advance(Phase.SUBMITTING, submitted_at=1.0)
    odd_one = item.advance(Phase.RUNNING, job_id="j", unknown_since=odd, finished_at=2.5)
    await store.commit([odd_one])
    if compacted:
        store.compact_now()
    store.close()
    written = (tmp_path / (SNAPSHOT if compacted else JOURNAL)).read_bytes()
    assert b"null" not in written
    back = _reopened(tmp_path).items[item.key]
    assert _same(back.unknown_since, odd)
    assert (back.submitted_at, back.finished_at, back.job_id) == (1.0, 2.5, "j")


@pytest.mark.parametrize("compacted", [False, True], ids=["journal", "snapshot"])
async def test_text_and_numbers_orjson_writes_otherwise_read_back(
    tmp_path: Path, *, compacted: bool
) -> None:
    """Text outside ASCII (UTF-8 from orjson, escapes from json), a lone surrogate and an int
    beyond 64 bits (both refused by orjson: json writes them) read back as saved."""
    store = CheckpointStore(tmp_path)
    store.open()
    plain = Item(row=make_row("b", name="образ 映像 é"), detail="ü \u2028 ok")
    odd = Item(row=make_row("c", description="bad \udcff byte"), size_bytes=2**70)
    await store.commit([plain, odd])
    if compacted:
        store.compact_now()
    store.close()
    back = _reopened(tmp_path).items
    assert back[plain.key] == plain
    assert back[odd.key] == odd
