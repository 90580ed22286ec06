"""Items <-> JSON-able dicts, for the checkpoint and its journal (no I/O here)."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

from orchestrator.model import Item, Phase, Row

_ROW_NAMES = tuple(f.name for f in fields(Row))
_ITEM_NAMES = tuple(f.name for f in fields(Item))
_ROW_FIELDS = frozenset(_ROW_NAMES)
_ITEM_FIELDS = frozenset(_ITEM_NAMES)
_PHASES = {phase.value: phase for phase in Phase}

T = TypeVar("T")


def _defaults(cls: type[Any]) -> dict[str, Any]:
    out = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    if any(f.default_factory is not MISSING for f in fields(cls)):
        raise TypeError(f"{cls.__name__}: a default factory is not supported here")
    return out


_ROW_DEFAULTS = _defaults(Row)
_ITEM_DEFAULTS = _defaults(Item)


def item_to_dict(item: Item) -> dict[str, Any]:
    """What ``dataclasses.asdict`` gives (every field is a plain value), without its deep copies:
    this runs for every state change of every item."""
    data = {name: getattr(item, name) for name in _ITEM_NAMES}
    data["row"] = {name: getattr(item.row, name) for name in _ROW_NAMES}
    data["phase"] = item.phase.value
    return data


def _build(cls: type[T], defaults: dict[str, Any], names: frozenset[str], data: Any) -> T:
    """``cls(**data)`` for a frozen dataclass of plain fields, without its generated
    ``__init__`` (a setattr call per field, three times the cost): what a checkpoint holds was
    built by that ``__init__`` when it was saved. Unknown keys (from a newer version) are left
    out; a missing key takes its default, a missing required one is a KeyError."""
    values = dict(defaults)
    values.update(data if data.keys() <= names else {k: data[k] for k in data.keys() & names})
    if len(values) != len(names):
        raise KeyError(f"{cls.__name__}: missing {sorted(names - values.keys())}")
    obj = object.__new__(cls)
    vars(obj).update(values)
    return obj


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`. Runs for every item of a checkpoint as it loads."""
    values = dict(data)
    values["row"] = _build(Row, _ROW_DEFAULTS, _ROW_FIELDS, data["row"])
    values["phase"] = _PHASES[data["phase"]]
    return _build(Item, _ITEM_DEFAULTS, _ITEM_FIELDS, values)
