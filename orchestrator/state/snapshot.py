"""The text of ``checkpoint.json``: one JSON object, laid out to be read fast and piece by piece.

Layout (any JSON reader reads it; the line breaks are whitespace)::

    {"version":1,"generation":3,"meta":{...},"items":{
    "key":{item},"key":{item},...,
    "key":{item},...
    }}

The first line holds everything but the items; each following line holds up to
``SNAPSHOT_CHUNK`` items and ends with a comma if more follow. A 100,000-item snapshot is read
from its file a line at a time with ``orjson`` (C speed, :func:`read_snapshot_file`), and each
item is converted as soon as its line is read: the items never exist as 100,000 dicts at once,
nor the file's 70 MB as bytes or text (peak memory). A snapshot laid out otherwise (by hand, or
by an older version), or damaged, is read whole by ``json`` (:func:`parse_snapshot`: a slower
reader that accepts any JSON, and names the damage).

The first line can be read alone (:func:`read_head`): the reader of a state dir learns the
snapshot's generation there, reads the journal of that generation first, and has the items
that a journal line replaces only looked at, not built (a stopped 100,000-item run leaves a
third of them so).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from orchestrator.core.exactjson import orjson_exact
from orchestrator.state.gcpause import collector_paused
from orchestrator.state.jsonbytes import dumps
from orchestrator.state.store import StateDamaged

T = TypeVar("T")

SNAPSHOT_CHUNK = 1000  # items per line of the snapshot (and per write)
_ITEMS_OPEN = ',"items":{'
# ``json.dumps(value, separators=(",", ":"))``, the same text, without the encoder that call
# builds every time (it runs for every item of every snapshot and journal line).
compact_json = json.JSONEncoder(separators=(",", ":")).encode
_END = "}}"


def render_snapshot(
    head: Mapping[str, Any],
    items: Sequence[T],
    encode: Callable[[T], Any],
    key: Callable[[T], str],
) -> Iterator[bytes]:
    """The snapshot's text in parts: ``head`` (version, generation, meta), then the items, each
    under its ``key`` (taken from the item: no list of pairs as large as the state). The items
    are written by orjson, unless they hold a NaN or an infinity (``jsonbytes.dumps``)."""
    opening = compact_json(dict(head))[:-1]
    yield (opening + (_ITEMS_OPEN if head else _ITEMS_OPEN[1:])).encode()
    for start in range(0, len(items), SNAPSHOT_CHUNK):
        chunk = items[start : start + SNAPSHOT_CHUNK]
        line = b",".join(
            _pairs_text(chunk[at : at + _PAIRS], encode, key) for at in range(0, len(chunk), _PAIRS)
        )
        yield (b",\n" if start else b"\n") + line
    yield b"\n" + _END.encode()


_PAIRS = 100  # items encoded in one call (their dicts exist at once: a few hundred KB at most)


def _pairs_text(items: Sequence[T], encode: Callable[[T], Any], key: Callable[[T], str]) -> bytes:
    """``"key":{item}`` of each item, joined by commas: the pairs as one object encoded in one
    call, its braces dropped (item by item if two items share a key)."""
    pairs = {key(item): encode(item) for item in items}
    if len(pairs) == len(items):
        return dumps(pairs)[1:-1]
    return b",".join(dumps(key(item)) + b":" + dumps(encode(item)) for item in items)


def read_head(path: Path) -> dict[str, Any] | None:
    """The snapshot's first line, everything but its items, read alone; None when the file
    cannot be read or is not laid out as :func:`render_snapshot` writes it."""
    try:
        with path.open("rb") as handle:
            line = handle.readline().decode()
    except (OSError, ValueError):
        return None
    return _head(line.removesuffix("\n"))


def _head(line: str) -> dict[str, Any] | None:
    if not line.endswith(_ITEMS_OPEN):
        return None
    try:
        head = json.loads(line[: -len(_ITEMS_OPEN)] + "}")
    except ValueError:
        return None
    if not isinstance(head, dict) or "items" in head:
        return None
    return head


def parse_snapshot(
    raw: bytes,
    convert: Callable[[Any], Any] | None = None,
    replaced: Container[str] = (),
    instead: Callable[[Any], Any] | None = None,
) -> Any:
    """The snapshot's JSON object, each value of ``items`` passed through ``convert`` as it is
    read. ValueError (as ``json.loads``) if it is not valid JSON. Laid out as
    :func:`render_snapshot` writes it (and given ``convert``), the items under the keys
    ``replaced`` are passed through ``instead``."""
    if convert is None:
        return json.loads(raw)
    text = raw.decode()
    del raw  # the text is enough from here on (peak memory)
    with collector_paused():
        fast = _parse_lines(text, convert, replaced, instead or convert)
        return fast if fast is not None else _parse_any(text, convert)


def read_snapshot_file(
    path: Path,
    convert: Callable[[Any], Any],
    replaced: Container[str] = (),
    instead: Callable[[Any], Any] | None = None,
) -> Any:
    """:func:`parse_snapshot` of the file at ``path``, the same value or the same error.

    Laid out as :func:`render_snapshot` writes it, the file is read a line at a time, each
    line parsed by ``orjson`` (C speed, about twice json's) and its items converted before the
    next is read: neither the file's bytes nor its text are ever held whole (a resumed
    100,000-item list: 70 MB each). Anything else, damage included, is read again whole by
    :func:`parse_snapshot` (json's words for what is wrong). OSError as ``open``."""
    with path.open("rb") as handle, collector_paused():
        snap = _stream_lines(handle, convert, replaced, instead or convert)
    if snap is not None:
        return snap
    return parse_snapshot(path.read_bytes(), convert, replaced, instead)


_END_BYTES = _END.encode()


def _stream_lines(
    handle: BinaryIO,
    convert: Callable[[Any], Any],
    replaced: Container[str],
    instead: Callable[[Any], Any],
) -> Any | None:
    """None when the file is not exactly as :func:`render_snapshot` writes it, or when a line
    or an item cannot be read (the caller reads it again, to say why in the usual words)."""
    first = handle.readline()
    if not first.endswith(b"\n"):
        return None
    try:
        snap = _head(first[:-1].decode())
    except ValueError:  # not UTF-8
        return None
    if snap is None:
        return None
    items: dict[str, Any] = {}
    line = handle.readline()
    after_comma = False  # the line before ended with a comma: items must follow
    try:
        while after_comma or line != _END_BYTES:
            if not line.endswith(b"\n") or line == b"\n":
                return None
            after_comma = line.endswith(b",\n")
            text = b"{" + line[: -2 if after_comma else -1] + b"}"
            # orjson where it reads the line as json would (no int beyond 64 bits in it).
            parsed = orjson.loads(text) if orjson_exact(text) else json.loads(text)
            for key, value in parsed.items():
                items[key] = instead(value) if key in replaced else convert(value)
            line = handle.readline()
            if not after_comma:
                break
    except (ValueError, StateDamaged):  # orjson.JSONDecodeError is a ValueError
        return None
    if line != _END_BYTES or handle.read(1):
        return None
    snap["items"] = items
    return snap


# -- the fast reader: the layout render_snapshot writes -------------------------------------------


def _parse_lines(
    text: str,
    convert: Callable[[Any], Any],
    replaced: Container[str],
    instead: Callable[[Any], Any],
) -> Any | None:
    """None when ``text`` is not laid out as :func:`render_snapshot` writes it."""
    end = text.find("\n")
    snap = _head(text[:end]) if end >= 0 else None
    if snap is None:
        return None
    items: dict[str, Any] = {}
    start, more = end + 1, False  # more: the last line of items ended with a comma
    while True:
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if end < 0 or line == _END:
            break
        if items and not more:
            raise ValueError(f"expected ',' before character {start}")
        more = line.endswith(",")
        for key, value in json.loads("{" + (line[:-1] if more else line) + "}").items():
            items[key] = instead(value) if key in replaced else convert(value)
        start = end + 1
    if more or line.rstrip() != _END or (end >= 0 and text[end:].strip()):
        raise ValueError("the snapshot does not end after its items")
    snap["items"] = items
    return snap


# -- the general reader: any JSON ------------------------------------------------------------------

_BLANK = " \t\n\r"


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _BLANK:
        at += 1
    return at


def _parse_object(
    text: str, at: int, decoder: json.JSONDecoder, value_of: Callable[[str, int], tuple[Any, int]]
) -> tuple[dict[str, Any], int]:
    """The JSON object whose ``{`` is at ``at`` (blanks skipped) and the index after its ``}``;
    each member's value is read by ``value_of(key, start)``. ValueError as ``json.loads``."""
    at = _skip(text, at)
    if text[at : at + 1] != "{":
        raise ValueError(f"expected an object at character {at}")
    out: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        return out, at + 1
    while True:
        key, at = decoder.raw_decode(text, at)
        if not isinstance(key, str):
            raise ValueError(f"a key is not a string before character {at}")
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise ValueError(f"expected ':' at character {at}")
        out[key], at = value_of(key, _skip(text, at + 1))
        at = _skip(text, at)
        if text[at : at + 1] == "}":
            return out, at + 1
        if text[at : at + 1] != ",":
            raise ValueError(f"expected ',' or '}}' at character {at}")
        at = _skip(text, at + 1)


def _parse_any(text: str, convert: Callable[[Any], Any]) -> Any:
    """Any JSON text, each value of its ``items`` object converted as soon as it is read."""
    decoder = json.JSONDecoder()

    def item(_key: str, at: int) -> tuple[Any, int]:
        value, end = decoder.raw_decode(text, at)
        return convert(value), end

    def member(key: str, at: int) -> tuple[Any, int]:
        if key == "items" and text[at : at + 1] == "{":
            return _parse_object(text, at, decoder, item)
        return decoder.raw_decode(text, at)

    snap, end = _parse_object(text, 0, decoder, member)
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data after character {end}")
    return snap
