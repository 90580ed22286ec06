"""The store seam: where item states become durable. ``commit`` returns once they are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from orchestrator.core.model import Item


class StoreError(Exception):
    """The state could not be saved (disk full, I/O error): fatal, never retried (exit 74)."""


class Store(Protocol):
    @property
    def items(self) -> Mapping[str, Item]:
        """The latest committed state of every tracked item."""
        ...

    @property
    def meta(self) -> Mapping[str, Any]:
        """Run metadata: list path, blocked tenants, last exit code, learned speed..."""
        ...

    async def commit(
        self, items: Iterable[Item] = (), meta: Mapping[str, Any] | None = None
    ) -> None:
        """Make these item states (and meta keys) durable; returns when they are."""
        ...


class InMemoryStore:
    """A store that keeps everything in memory: for the engine's virtual-time tests."""

    def __init__(
        self, items: Mapping[str, Item] | None = None, meta: Mapping[str, Any] | None = None
    ) -> None:
        self._items: dict[str, Item] = dict(items or {})
        self._meta: dict[str, Any] = dict(meta or {})
        self.commits = 0

    @property
    def items(self) -> Mapping[str, Item]:
        return self._items

    @property
    def meta(self) -> Mapping[str, Any]:
        return self._meta

    async def commit(
        self, items: Iterable[Item] = (), meta: Mapping[str, Any] | None = None
    ) -> None:
        for item in items:
            self._items[item.key] = item
        if meta:
            self._meta.update(meta)
        self.commits += 1
