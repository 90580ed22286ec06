"""A JSON answer's body read as ``json.loads`` reads it (the client skips its encoding guess
for a body that opens with ``{``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.calls import _decode

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])


def _as_json_loads(raw: bytes) -> Any:
    """What the client made of a body before: ``json.loads`` of the bytes (or the error)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ErrorKind.TRANSIENT
    return body if isinstance(body, dict) else ErrorKind.TRANSIENT


def _ours(raw: bytes) -> Any:
    try:
        return _decode(raw, "GET host/x", 200, mutating=False)
    except CloudError as error:
        return error.kind if "not a JSON object" in error.message else error


@settings(max_examples=300, deadline=None, database=None)
@given(value=_JSON, encoding=_ENCODINGS, space=st.sampled_from(["", " ", "\n"]))
def test_any_answer_in_any_encoding_reads_as_json_loads_reads_it(
    value: Any, encoding: str, space: str
) -> None:
    raw = (space + json.dumps(value, ensure_ascii=False) + space).encode(encoding, "surrogatepass")
    assert _ours(raw) == _as_json_loads(raw)


@settings(max_examples=300, deadline=None, database=None)
@given(raw=st.binary(max_size=24).map(lambda tail: b"{" + tail) | st.binary(max_size=24))
def test_any_bytes_read_as_json_loads_reads_them(raw: bytes) -> None:
    assert _ours(raw) == _as_json_loads(raw)


@pytest.mark.parametrize(
    "raw",
    [b'{"a":"\\ud800"}', b'{"a":"\xed\xa0\x80"}', b'{"a":1}\x00', b"{\x00", b'{"a":1', b"{}"]
    + [b'{"a":1}' + tail for tail in (b" \t\r\n", b" x", b"{}", b"\x0b", b"\xc2\xa0", b"\x1c")],
)
def test_odd_objects_read_as_json_loads_reads_them(raw: bytes) -> None:
    """Lone surrogates (escaped, or raw as json.loads lets them pass), a NUL, a cut object;
    after the object JSON's whitespace, or more (other whitespace, another value): extra data."""
    assert _ours(raw) == _as_json_loads(raw)
