"""Items <-> JSON-able dicts, for the checkpoint and its journal (no I/O here)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from orchestrator.model import Item, Phase, Row

_ROW_FIELDS = frozenset(f.name for f in fields(Row))
_ITEM_FIELDS = frozenset(f.name for f in fields(Item)) - {"row", "phase"}
_ROW_NAMES = tuple(f.name for f in fields(Row))
_ITEM_NAMES = tuple(f.name for f in fields(Item))


def item_to_dict(item: Item) -> dict[str, Any]:
    """What ``dataclasses.asdict`` gives (every field is a plain value), without its deep copies:
    this runs for every state change of every item."""
    data = {name: getattr(item, name) for name in _ITEM_NAMES}
    data["row"] = {name: getattr(item.row, name) for name in _ROW_NAMES}
    data["phase"] = item.phase.value
    return data


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`; unknown keys (from a newer version) are ignored."""
    row = Row(**{k: v for k, v in data["row"].items() if k in _ROW_FIELDS})
    rest = {k: v for k, v in data.items() if k in _ITEM_FIELDS}
    return Item(row=row, phase=Phase(data["phase"]), **rest)
