"""The snapshot's item lines: a hundred items encoded in one call, the same lines and values as
json's text item by item."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.state.snapshot import render_snapshot

_TEXT = st.text(max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _each(head: dict[str, Any], pairs: list[tuple[str, Any]], chunk: int) -> bytes:
    """The snapshot's text with each item encoded on its own (as before the chunks)."""
    out = [(json.dumps(head, separators=(",", ":"))[:-1] + ',"items":{').encode()]
    for start in range(0, len(pairs), chunk):
        line = ",".join(
            json.dumps(key) + ":" + json.dumps(value, separators=(",", ":"))
            for key, value in pairs[start : start + chunk]
        )
        out.append((b",\n" if start else b"\n") + line.encode())
    return b"".join([*out, b"\n}}"])


def _read(text: bytes) -> Any:
    """The text's values as json reads them, every pair in its order (a key twice: both)."""
    return json.loads(text, object_pairs_hook=list)


@settings(max_examples=150, deadline=None, database=None)
@given(
    pairs=st.lists(st.tuples(_TEXT, _VALUES), max_size=12),
    chunk=st.integers(1, 5),
    at_once=st.integers(1, 6),
)
def test_chunks_encoded_at_once_are_the_text_of_each_item(
    pairs: list[tuple[str, Any]], chunk: int, at_once: int
) -> None:
    """Any keys (unicode, quotes, the same key twice in a chunk) and values (infinities
    included), any line and encoding sizes: the same lines, holding the same values (orjson
    writes text outside ASCII unescaped)."""
    head = {"version": 1, "generation": 2}
    with (
        patch("orchestrator.state.snapshot.SNAPSHOT_CHUNK", chunk),
        patch("orchestrator.state.snapshot._PAIRS", at_once),
    ):
        text = b"".join(render_snapshot(head, pairs, lambda p: p[1], lambda p: p[0]))
    each = _each(head, pairs, chunk)
    assert text.count(b"\n") == each.count(b"\n")
    assert _read(text) == _read(each)
    if text.isascii() and b"\x7f" not in text:  # json escapes DEL too: otherwise the same
        assert text == each
