"""Items <-> JSON-able dicts, for the checkpoint and its journal (no I/O here)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from orchestrator.model import Item, Phase, Row

_ROW_FIELDS = frozenset(f.name for f in fields(Row))
_ITEM_FIELDS = frozenset(f.name for f in fields(Item)) - {"row", "phase"}


def item_to_dict(item: Item) -> dict[str, Any]:
    data = asdict(item)
    data["phase"] = item.phase.value
    return data


def item_from_dict(data: dict[str, Any]) -> Item:
    """Inverse of :func:`item_to_dict`; unknown keys (from a newer version) are ignored."""
    row = Row(**{k: v for k, v in data["row"].items() if k in _ROW_FIELDS})
    rest = {k: v for k, v in data.items() if k in _ITEM_FIELDS}
    return Item(row=row, phase=Phase(data["phase"]), **rest)
