"""The store seam: where item states become durable. ``commit`` returns once they are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from orchestrator.core.model import Item
from orchestrator.state.meta import RunMeta


class StoreError(Exception):
    """The state could not be saved (disk full, I/O error): fatal, never retried (exit 74)."""


class StateDamaged(StoreError):
    """The state dir's files are not what the store writes (a bad journal line that is not the
    last one, a checkpoint of the wrong shape): the run stops before any call, touching
    nothing (exit 74); ``run --repair-state`` sets them aside and rebuilds."""


class Store(Protocol):
    @property
    def items(self) -> Mapping[str, Item]:
        """The latest committed state of every tracked item."""
        ...

    @property
    def meta(self) -> RunMeta:
        """Run metadata: list path, blocked tenants, last exit code, learned speed..."""
        ...

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        """Make these item states (and the new meta, if given) durable; returns when they are.

        ``meta`` is the whole new meta: build it from :attr:`meta` in the same step, with no
        ``await`` in between (``dataclasses.replace(store.meta, blocked=...)``), so that no
        other task's change is lost. The store itself takes it before its first ``await``."""
        ...

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        """Make copy intents durable, like :meth:`commit`; True once they are. False if
        :meth:`hold_intents` came first (before their write began): nothing was written and
        the stored states are what they were (no copy request may follow)."""
        ...

    def hold_intents(self) -> None:
        """The run stops submitting: intents waiting to be written are withdrawn at once
        (their commits answer False), later ones refused."""
        ...

    def hurry(self) -> None:
        """The run must end soon: no housekeeping (compaction) from now on."""
        ...


class InMemoryStore:
    """A store that keeps everything in memory: for the engine's virtual-time tests."""

    def __init__(
        self, items: Mapping[str, Item] | None = None, meta: RunMeta | None = None
    ) -> None:
        self._items: dict[str, Item] = dict(items or {})
        self._meta = meta or RunMeta()
        self.commits = 0

    @property
    def items(self) -> Mapping[str, Item]:
        return self._items

    @property
    def meta(self) -> RunMeta:
        return self._meta

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        for item in items:
            self._items[item.key] = item
        if meta is not None:
            self._meta = meta
        self.commits += 1

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        """At once, like every commit here: never waiting, never withdrawn."""
        await self.commit(items)
        return True

    def hold_intents(self) -> None:
        """Nothing waits to be written here (the store is reused by the next run)."""

    def hurry(self) -> None:
        """Nothing to hurry: no housekeeping in memory."""
