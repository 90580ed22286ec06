"""What every task of a run shares: the seams, the config, and what the run has learned."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog

from orchestrator import logs
from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.core.advice import blocked_advice
from orchestrator.core.cloud import CloudError, TenantCloud, refuses_key
from orchestrator.core.model import AFTER_COPY_PHASES, Item, Phase
from orchestrator.core.outcome import Stop
from orchestrator.core.speed import RouteSpeeds
from orchestrator.engine.outage import OutageWatch, watched
from orchestrator.engine.targets import TargetIndex
from orchestrator.state.meta import BlockedKey
from orchestrator.state.store import Store

log = structlog.get_logger("ims_migrate")

MAX_AUTOMATIC_ATTEMPTS = 10


@dataclass
class Counters:
    polls: int = 0
    submissions: int = 0
    back_pressure: int = 0
    reconciliations: int = 0
    failures: int = 0
    first_poll_at: float | None = None  # when the run's first job poll was answered
    first_poll_cpu: float | None = None  # the process's CPU seconds by then

    def poll_answered(self, now: float) -> bool:
        """Count an answered job poll; True for the run's first (its time and CPU are kept)."""
        self.polls += 1
        if self.first_poll_at is not None:
            return False
        self.first_poll_at, self.first_poll_cpu = now, time.process_time()
        return True


class SubmitStop:
    """Whether copy requests may still be sent: the flag the client reads last before the wire
    (``SEND_STOP``). :meth:`set` by the run (it wakes the waiters), or :meth:`trip` from a
    signal's own handler, the moment the signal arrives: a plain attribute write, which a Python
    signal handler may make between any two bytecodes of the loop's thread, where no event or
    task may be touched. The waiters wake once the run hears the signal and sets the flag; a
    check reads both.

    It also takes back, when it is set, the copy requests still waiting under it (for the
    request budget, a connection): each waits inside :meth:`withdrawing`, a cancel scope this
    flag cancels, rather than beside a watcher task of its own (a task group per waiting
    request: ~3 % of a busy run's CPU)."""

    __slots__ = ("_event", "_scopes", "tripped")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._scopes: set[anyio.CancelScope] = set()
        self.tripped = False

    def trip(self) -> None:
        """Signal-safe: no copy request passes its last check from now on."""
        self.tripped = True

    def set(self) -> bool:
        """Set it and wake its waiters; False if it was set already."""
        if self._event.is_set():
            return False
        self._event.set()
        scopes, self._scopes = self._scopes, set()
        for scope in scopes:
            scope.cancel()
        return True

    def is_set(self) -> bool:
        return self.tripped or self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    @contextmanager
    def withdrawing(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that :meth:`set` cancels (at once if the flag is set or tripped)."""
        with anyio.CancelScope() as scope:
            if self.is_set():
                scope.cancel()
            else:
                self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)


@dataclass
class RunContext:
    config: Config
    clock: Clock
    store: Store
    clouds: Mapping[str, TenantCloud]
    rng: random.Random = field(default_factory=random.Random)
    stop: anyio.Event = field(default_factory=anyio.Event)  # stop now: signal, deadline
    no_more_submits: SubmitStop = field(default_factory=SubmitStop)  # finish what runs
    stopped: Stop | None = None  # why submitting stopped early, once it has
    speed: RouteSpeeds = field(default_factory=RouteSpeeds)
    blocked: dict[str, BlockedKey] = field(default_factory=dict)  # tenant -> why
    blocked_for_run: set[str] = field(default_factory=set)  # of those, not remembered
    quota_blocked: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, region)
    unavailable: dict[str, str] = field(default_factory=dict)  # tenant -> outage message
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    on_change: Callable[[Item], None] | None = None
    max_failures: int | None = None
    targets: TargetIndex = field(init=False)  # what the target regions hold (design I2)
    outages: OutageWatch = field(init=False)  # endpoints that stopped answering

    def __post_init__(self) -> None:
        self.outages = OutageWatch(self.config.timing.outage, self.clock.now())
        self.clouds = watched(self.clouds, self.config, self.outages, self.clock.now)
        self.targets = TargetIndex(self.clouds, self.clock.now, self.config.timing.settle)

    def request_stop(self, stop: Stop) -> None:
        """Stop submitting and cancel the polls now (their state is durable); the store does
        no more housekeeping: the run ends within seconds."""
        self.stop_submitting(stop)
        self.store.hurry()
        self.stop.set()

    def stop_submitting(self, stop: Stop) -> None:
        """Submit nothing more, but follow the copies already running to their end. Intents
        not yet being written are withdrawn: never written, their items stay pending."""
        if self.stopped is None:
            self.stopped = stop
            log.warning("run.stopping", reason=stop.text)
        self.halt_submits()

    def halt_submits(self) -> None:
        """No copy request from now on: what a signal does first, in the task that hears it
        (``stop_submitting`` then says why, from a task of the run)."""
        if self.no_more_submits.set():
            self.store.hold_intents()

    async def save(self, item: Item, event: str | None = None, **fields: Any) -> Item:
        """Make the item's state durable, then log it (the log never runs ahead of the state)."""
        await self.store.commit([item])
        self._announce(item, event, **fields)
        return item

    def entered(self, item: Item, event: str | None = None, **fields: Any) -> Item:
        """Log an item's new phase that is not saved yet (``verifying``, the copy made: the
        checkpoint keeps the item's state from before it until the next durable step or
        :meth:`keep`; a resume from that state finds the copy again). Logged and shown as a
        save would be, in the same order: the log runs ahead of the state only here."""
        self._announce(item, event, **fields)
        return item

    async def keep(self, item: Item) -> None:
        """Make ``item`` durable (not logged again) if the checkpoint still holds the item's
        state from before its copy was made: a ``verifying`` only :meth:`entered`, about to
        wait (the image not active yet, a step retried later, the line of checks, a stop).
        Nothing is written otherwise: it is saved already, or a later step of it is (a save
        under way when a stop cancelled its task). Shielded: a stop lands after the write."""
        stored = self.store.items.get(item.key)
        if stored is item or (stored is not None and stored.phase in _COPY_MADE):
            return
        with anyio.CancelScope(shield=True):
            await self.store.commit([item])

    async def save_intent(self, item: Item) -> bool:
        """Make a copy intent durable, then log it; False (nothing saved, nothing logged) when
        submitting stopped before its write began: no copy request may follow then."""
        if not await self.store.commit_intents([item]):
            return False
        self._announce(item, None)
        return True

    async def save_many(self, items: Sequence[Item], event: str | None = None) -> None:
        """Make many items' states durable in one commit, then log each (e.g. preflight's)."""
        if items:
            await self.store.commit(items)
        for item in items:
            self._announce(item, event)

    def _announce(self, item: Item, event: str | None, **fields: Any) -> None:
        """An item's state is durable: log it, count it against the failure threshold, and
        tell the terminal, in that order."""
        log_item(item, event, **fields)
        if item.phase == Phase.FAILED:
            self._count_failure()
        if self.on_change is not None:
            self.on_change(item)

    def _count_failure(self) -> None:
        """``--max-failures``: once reached, submit nothing more (running copies finish)."""
        self.counters.failures += 1
        if self.max_failures is not None and self.counters.failures >= self.max_failures:
            self.stop_submitting(Stop.failure_threshold(self.counters.failures))

    def lasting_blocks(self) -> dict[str, BlockedKey]:
        """The blocks the checkpoint remembers: wrong keys, not missing permissions."""
        return {t: b for t, b in self.blocked.items() if t not in self.blocked_for_run}

    async def block_tenant(self, tenant: str, error: CloudError) -> None:
        """Credentials refused: stop this tenant now. A wrong key is remembered until the key
        changes; a missing permission, a clock skew or an expired token only for this run."""
        if tenant in self.blocked:
            return
        lasting = refuses_key(error.code, error.status)
        if not lasting:
            self.blocked_for_run.add(tenant)
        why = BlockedKey(
            fingerprint=self.fingerprints.get(tenant, ""),
            code=error.code or str(error.status or ""),
            message=error.message,
            at=self.clock.now(),
        )
        self.blocked[tenant] = why
        log.error(
            "tenant.blocked",
            tenant=tenant,
            error_code=why.code,
            error_message=error.message,
            advice=blocked_advice(tenant, self.config.tenant(tenant), lasting=lasting),
            remembered=lasting,
        )
        if lasting:
            blocked = {**self.store.meta.blocked, tenant: why}
            await self.store.commit(meta=replace(self.store.meta, blocked=blocked))


# The phases of an item whose copy is made: after the copy, and the ends.
_COPY_MADE = AFTER_COPY_PHASES | {Phase.SUCCEEDED, Phase.FAILED, Phase.REJECTED}

# Per phase: its event's name, its public state and its text (an enum's ``value`` and
# ``public`` are Python-level look-ups: five events per item).
_PHASE_WORDS = {phase: (f"item.{phase.value}", phase.public, phase.value) for phase in Phase}


def log_item(item: Item, event: str | None = None, **fields: Any) -> None:
    """One ``events.jsonl`` line for an item's new state: durable, but for a phase only
    :meth:`RunContext.entered` (``verifying``)."""
    name, public, phase = _PHASE_WORDS[item.phase]
    values = {
        "tenant": item.row.tenant,
        "item": item.key,
        "state": public,
        "phase": phase,
        "attempt": item.attempt,
        "job_id": item.job_id,
        "target_image_id": item.target_image_id,
        "detail": item.detail,
        "error_code": item.error_code,
        "error_message": item.error_message,
    }
    if fields:
        if not values.keys().isdisjoint(fields):  # as a keyword given twice would be
            raise TypeError(f"log_item: fields {sorted(values.keys() & fields)} given twice")
        values.update(fields)
    if not logs.info(event or name, values):
        log.info(event or name, **values)
