"""A JSON answer's body read as ``json.loads`` reads it (the client skips its encoding guess
for a body that opens with ``{``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.calls import _decode, _json_object

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


# -- orjson first, json.loads' reading kept --------------------------------------------------


def _same(ours: Any, theirs: Any) -> bool:
    """The same reading, strictly: the same types all through (an int is not the float it
    equals), floats by their repr (-0.0, NaN), a dict's keys in the same order."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, float):
        return repr(ours) == repr(theirs)
    if isinstance(ours, dict):
        return list(ours) == list(theirs) and all(_same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    return bool(ours == theirs)


def _reading(raw: bytes) -> Any:
    """``json.loads``' reading of an answer's body, as the client takes it."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


# Numbers as an answer may write them: integers of any length (beyond 64 bits: orjson reads
# those as floats, silently), decimals with many digits, exponents beyond a float's range.
_NUMBER_TEXT = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**45).map(str),
    st.just("") | st.text("0123456789", min_size=1, max_size=30).map(".".__add__),
    st.just("")
    | st.builds(
        "e{}{}".format, st.sampled_from(["", "+", "-"]), st.integers(min_value=0, max_value=400)
    ),
)
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates too
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and the infinities: json.dumps writes NaN, Infinity
    | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _object_bytes(value: dict[str, Any], ascii_only: bool, encoding: str) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")


@settings(max_examples=500, deadline=None, database=None)
@given(
    value=st.dictionaries(_ANY_TEXT, _VALUES, max_size=4),
    ascii_only=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32-le"]),
)
def test_any_object_reads_as_json_loads_reads_it_strictly(
    value: dict[str, Any], ascii_only: bool, encoding: str
) -> None:
    raw = _object_bytes(value, ascii_only, encoding)
    assert _same(_json_object(raw), _reading(raw))


@settings(max_examples=500, deadline=None, database=None)
@given(numbers=st.lists(_NUMBER_TEXT, min_size=1, max_size=4))
def test_any_number_reads_as_json_loads_reads_it(numbers: list[str]) -> None:
    """Integers beyond 64 bits stay integers, floats round as json's, 1e999 is inf."""
    raw = ('{"n": ' + numbers[0] + ', "list": [' + ", ".join(numbers) + "]}").encode()
    assert _same(_json_object(raw), _reading(raw))


@settings(max_examples=500, deadline=None, database=None)
@given(
    value=st.dictionaries(st.text(max_size=4), _VALUES, max_size=3),
    at=st.integers(min_value=0),
    byte=st.binary(min_size=1, max_size=2),
    replace=st.booleans(),
)
def test_any_damaged_object_reads_as_json_loads_reads_it(
    value: dict[str, Any], at: int, byte: bytes, replace: bool
) -> None:
    """A byte or two put in or over a valid body: both refuse it, or read it alike."""
    raw = _object_bytes(value, False, "utf-8")
    at %= len(raw) + 1
    raw = raw[:at] + byte + raw[at + len(byte) if replace else at :]
    assert _same(_json_object(raw), _reading(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n": 18446744073709551616}',  # 2**64: orjson alone reads 1.8446744073709552e+19
        b'{"n": -9223372036854775809}',  # -2**63 - 1
        b'{"n": [1, {"m": 123456789012345678901234567890}]}',
        b'{"n": 18446744073709551615, "m": -9223372036854775808}',  # 64 bits: exact either way
        b'{"id": "1234567890123456789012"}',  # 19 digits in a string: the stdlib reads it
        b'{"n": 1e999, "m": -1e400}',
        b'{"n": NaN, "m": Infinity, "k": -Infinity}',
        b'\xef\xbb\xbf{"n": 1}',
        b'{"a": "\\ud800", "b": "\xed\xa0\x80"}',
        b'{"a": 1, "b": 2, "a": 3}',
        b'{"a": -0, "b": -0.0, "c": 1.5e-400, "d": 0.1000000000000000055511151231257827}',
        b"",
        b" \r\n",
        b"[1]",
        b'"text"',
        b'{"a": 1}{}',
    ],
)
def test_bodies_orjson_reads_otherwise_read_as_json_loads_reads_them(raw: bytes) -> None:
    assert _same(_json_object(raw), _reading(raw))


def test_a_big_integer_stays_an_integer() -> None:
    """The case the digit run guards (the test above fails without it)."""
    body = _json_object(b'{"size": 36893488147419103232}')
    assert body == {"size": 2**65}
    assert type(body["size"]) is int
