"""Compact JSON as bytes, for the store's lines: ``orjson``'s (C speed) where it writes what
``json`` would read back the same, ``json``'s otherwise.

The checkpoint and its journal were written by ``json`` (compact separators) and are read by
``orjson``, with ``json`` as the fallback that names damage. ``orjson`` writes the same values
three to four times faster, but not always the same text:

* a NaN or an infinity becomes ``null``, silently: read back, a float would be None (a wrong
  value, or damage where a number is required). ``json`` writes ``NaN`` / ``Infinity``, which
  the readers' ``json`` fallback reads back as they were. :func:`dumps` gives ``json``'s text
  for any value holding a non-finite float, so a state reads back as it was saved;
* text outside ASCII is written as UTF-8, not as ``\\u`` escapes: the same values once read
  (the files are UTF-8 either way);
* it refuses what ``json`` writes: a key that is not a str, an int beyond 64 bits, a str with
  a lone surrogate. ``json`` writes those, as it always did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# ``json.dumps(value, separators=(",", ":"))``: the text the store's files always held.
compact_json = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """``compact_json(value)`` as bytes, or a text that reads back as the same value: written
    by ``orjson``, unless it holds a NaN or an infinity or ``orjson`` refuses it."""
    try:
        out = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: json writes it (or raises the same TypeError)
        return compact_json(value).encode()
    # Every non-finite float became a "null": where there is none, there was none (a text
    # holding the word costs a look at the floats, never a wrong line).
    if b"null" in out and not finite(value):
        return compact_json(value).encode()
    return out


def finite(value: Any) -> bool:
    """Whether no float in ``value`` (nested in dicts, lists and tuples) is a NaN or an
    infinity."""
    if isinstance(value, float):
        return value - value == 0.0  # NaN - NaN and inf - inf are NaN
    if isinstance(value, dict):
        return all(finite(inner) for inner in value.values())
    if isinstance(value, list | tuple):
        return all(finite(inner) for inner in value)
    return True
