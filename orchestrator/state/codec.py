"""Items <-> JSON-able dicts, for the checkpoint and its journal (no I/O here)."""

from __future__ import annotations

from dataclasses import MISSING, fields
from sys import intern
from typing import Any, TypeVar

from orchestrator.core.model import Item, Phase, Row

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


# Written even when they hold their default: what a reader of the raw JSON looks at first.
_ALWAYS = frozenset({"phase", "attempt"})
_WRITTEN = object()  # the "default" of a field written whatever it holds


Plan = tuple[tuple[str, Any], ...]


def _plan(names: tuple[str, ...], defaults: dict[str, Any]) -> Plan:
    """Each field with the default that leaves it out (:data:`_WRITTEN`: never left out)."""
    return tuple(
        (name, _WRITTEN if name in _ALWAYS else defaults.get(name, _WRITTEN)) for name in names
    )


_ROW_PLAN = _plan(_ROW_NAMES, _ROW_DEFAULTS)
_ITEM_PLAN = _plan(_ITEM_NAMES, _ITEM_DEFAULTS)


def _sparse(obj: Any, plan: Plan) -> dict[str, Any]:
    """The fields of a dataclass that do not hold their default. Runs for every save of every
    item: read from the instance's ``__dict__`` (as :func:`_build` writes it; half the cost of
    a getattr per field), a plain loop over a precomputed plan."""
    values = vars(obj)
    out = {}
    for name, default in plan:
        value = values[name]
        if value is default or (
            default is not _WRITTEN and type(value) is type(default) and value == default
        ):
            continue
        out[name] = value
    return out


def item_to_dict(item: Item) -> dict[str, Any]:
    """A JSON-able dict of the item. Fields that hold their default are left out (a third of a
    checkpoint's size and of its reading time), except ``phase`` and ``attempt``; the row's
    required fields (its identity) are always there. :func:`item_from_dict` puts them back."""
    data = _sparse(item, _ITEM_PLAN)
    data["row"] = _sparse(item.row, _ROW_PLAN)
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


# Texts that many items share (a tenant, a region, "copied", the facts of images made from one
# template): one string each, not one per item as JSON reads them (100,000 items: memory).
_SHARED_ROW = ("tenant", "source_region", "target_region", "project_name", "source_project_name")
_SHARED_ITEM = ("detail", "verify", "source_facts")


def _share(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        value = data.get(name)
        if type(value) is str:
            data[name] = intern(value)
    return data


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`. Runs for every item of a checkpoint as it loads."""
    values = _share(dict(data), _SHARED_ITEM)
    values["row"] = _build(Row, _ROW_DEFAULTS, _ROW_FIELDS, _share(data["row"], _SHARED_ROW))
    values["phase"] = _PHASES[data["phase"]]
    return _build(Item, _ITEM_DEFAULTS, _ITEM_FIELDS, values)
