"""In which order waiting items get a slot. Pure.

Within a tenant, higher ``priority`` first, then the largest image first (longest processing
time first keeps the tail short: the last copies to start are the small ones), then the list's
order. The list's own order (nothing else) exists to measure that against.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from orchestrator.core.model import Item

SortKey = tuple[int, int, int, str]


class Order(StrEnum):
    """``[scheduling] order``: which waiting item gets the next slot."""

    LARGEST = "largest"  # priority, then the largest image first (the good strategy)
    LIST = "list"  # the list's order, nothing else (to measure the other against)


def queue_order(item: Item) -> SortKey:
    """Higher priority first, then largest first (LPT keeps the tail short), then list order."""
    return (-item.row.priority, -(item.size_bytes or 0), item.row.line, item.key)


def list_order(item: Item) -> SortKey:
    """The list's own order, nothing else (the naive strategy, for comparison)."""
    return (0, 0, item.row.line, item.key)


ORDERS: dict[Order, Callable[[Item], SortKey]] = {
    Order.LARGEST: queue_order,
    Order.LIST: list_order,
}
