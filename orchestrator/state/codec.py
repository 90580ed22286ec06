"""Items <-> JSON-able dicts, for the checkpoint and its journal (no I/O here).

``Item`` and ``Row`` keep their fields in slots (no ``__dict__``: a run holds 100,000 of
them). Both directions run for every item of every save and load, so each is a function made
once from ``dataclasses.fields`` (as ``dataclasses`` makes ``__init__``): one line per field,
no loop, no look-up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from sys import intern
from typing import Any

from orchestrator.core.model import Item, Phase, Row, item_key

_PHASES = {phase.value: phase for phase in Phase}

# Written even when they hold their default: what a reader of the raw JSON looks at first.
_ALWAYS = frozenset({"phase", "attempt"})


def _stored(cls: type[Any]) -> list[Field[Any]]:
    """The fields a checkpoint keeps: those the constructor takes (``Row.key`` is made from
    them, never stored), each with a plain default or none."""
    stored = [f for f in fields(cls) if f.init]
    if any(f.default_factory is not MISSING for f in stored):
        raise TypeError(f"{cls.__name__}: a default factory is not supported here")
    return stored


def _make(name: str, lines: list[str], names: dict[str, Any]) -> Callable[..., Any]:
    exec("\n".join(lines), names)  # noqa: S102 -- our own text, from our own dataclass fields
    made: Callable[..., Any] = names[name]
    return made


def _sparse_of(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """``sparse(obj)``: the fields of ``obj`` that do not hold their default (a field without a
    default, or in :data:`_ALWAYS`, always), in the order of the class's fields. A value equal
    to its default but of another type (``0.0`` for ``0``) is kept."""
    names: dict[str, Any] = {}
    lines = ["def sparse(obj):", "    out = {}"]
    for at, f in enumerate(_stored(cls)):
        if f.default is MISSING or f.name in _ALWAYS:
            lines.append(f"    out[{f.name!r}] = obj.{f.name}")
            continue
        names[f"d{at}"], names[f"t{at}"] = f.default, type(f.default)
        lines += [
            f"    value = obj.{f.name}",
            f"    if not (value is d{at} or (type(value) is t{at} and value == d{at})):",
            f"        out[{f.name!r}] = value",
        ]
    lines.append("    return out")
    return _make("sparse", lines, names)


def _fill(
    cls: type[Any],
    obj: str,
    data: str,
    names: dict[str, Any],
    given: dict[str, str],
    shared: tuple[str, ...],
) -> list[str]:
    """Lines that fill ``obj``, to be an instance of ``cls`` (a frozen dataclass of plain
    fields), from the dict named ``data``, as ``cls(**data)`` would: a missing field takes its
    default (a missing required one is a KeyError), unknown keys (from a newer version, or a
    value that is not stored) are left out; ``given``: fields set from an expression instead;
    ``shared``: fields whose text is interned. Without the generated ``__init__`` (keyword
    parsing and ``object.__setattr__`` per field: several times the cost): the object is filled
    as an instance of a class of the same slots that may be written (``{obj}_blank``), then the
    caller gives it its class (``{obj}_cls``: CPython allows it between classes of the same
    layout). What a checkpoint holds was built by that ``__init__`` when it was saved."""
    names[f"{obj}_blank"] = type(f"_{cls.__name__}Slots", (), {"__slots__": cls.__slots__})
    names[f"{obj}_cls"] = cls
    lines = [f"    {obj} = {obj}_blank()"]
    for at, f in enumerate(_stored(cls)):
        if f.name in given:
            value = given[f.name]
        elif f.default is MISSING:
            value = f"{data}[{f.name!r}]"
        else:
            names[f"{obj}_d{at}"] = f.default
            value = f"{data}.get({f.name!r}, {obj}_d{at})"
        if f.name in shared:
            lines.append(f"    v = {value}")
            lines.append(f"    {obj}.{f.name} = intern(v) if type(v) is str else v")
        else:
            lines.append(f"    {obj}.{f.name} = {value}")
    return lines


_row_sparse = _sparse_of(Row)
_item_sparse = _sparse_of(Item)


def item_to_dict(item: Item) -> dict[str, Any]:
    """A JSON-able dict of the item. Fields that hold their default are left out (a third of a
    checkpoint's size and of its reading time), except ``phase`` and ``attempt``; the row's
    required fields (its identity) are always there. :func:`item_from_dict` puts them back."""
    data = _item_sparse(item)
    data["row"] = _row_sparse(item.row)
    data["phase"] = item.phase.value
    return data


# Texts that many items share (a tenant, a region, "copied", the facts of images made from one
# template): one string each, not one per item as JSON reads them (100,000 items: memory).
_SHARED_ROW = ("tenant", "source_region", "target_region", "project_name", "source_project_name")
_SHARED_ITEM = ("detail", "verify", "source_facts")


def _from_dict_of() -> Callable[[dict[str, Any]], Item]:
    """``build(data)``: the item and its row, made by one function (no dict copied, no call per
    object or per shared text: it runs for every item of a checkpoint as it loads)."""
    names: dict[str, Any] = {"intern": intern, "PHASES": _PHASES, "item_key": item_key}
    lines = ["def build(data):", "    raw = data['row']"]
    lines += _fill(Row, "row", "raw", names, {}, _SHARED_ROW)
    lines += [  # the row's key (``Row.key``), made now: not later by an AttributeError per row
        "    if type(row.line_tag) is str:",
        "        row._identity = item_key(row.tenant, row.image_id, row.target_region)"
        " + row.line_tag",
        "    row.__class__ = row_cls",
    ]
    given = {"row": "row", "phase": "PHASES[data['phase']]"}
    lines += _fill(Item, "item", "data", names, given, _SHARED_ITEM)
    lines += ["    item.__class__ = item_cls", "    return item"]
    return _make("build", lines, names)


_item_build = _from_dict_of()


_ROW_NEEDS = frozenset(f.name for f in _stored(Row) if f.default is MISSING)
_ITEM_NEEDS = frozenset(f.name for f in _stored(Item) if f.default is MISSING) | {"phase"}


def item_readable(data: Any) -> bool:
    """Whether :func:`item_from_dict` builds an item from ``data`` (a value read from JSON),
    without building it: every field it needs is there, the row is an object, the phase one
    of :class:`Phase`'s. For a snapshot's item that a journal line replaces: never built, but
    its damage is as loud as if it were (``checkpoint.read_snapshot``)."""
    if not isinstance(data, dict):
        return False
    row = data.get("row")
    if not (isinstance(row, dict) and row.keys() >= _ROW_NEEDS and data.keys() >= _ITEM_NEEDS):
        return False
    try:
        return data["phase"] in _PHASES
    except TypeError:  # an unhashable phase (a list, an object)
        return False


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`. Runs for every item of a checkpoint as it loads."""
    return _item_build(data)
