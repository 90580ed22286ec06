"""The scheduler: probe tenants, preflight, then keep every account's slots busy until done.

One :class:`~orchestrator.engine.window.Window` per cloud account (tenants that resolve to the
same IAM domain share one). Each window hands its free slots to the best pending items
(priority, then largest first); each item is driven by a
:class:`~orchestrator.engine.lifecycle.Driver` while it holds its slot. A stop (signal,
``--deadline``, failure threshold) stops submitting at once and cancels the polls: every state
that matters is already durable, and the next run adopts the copies still running in the cloud.

(Over 400 lines: the probe, preflight and slot loop share one stop and one set of windows;
the window, the item's life and preflight already live apart.)
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

import anyio
import anyio.abc

from orchestrator.clock import Clock
from orchestrator.core.advice import blocked_advice
from orchestrator.core.cloud import JOB_FAIL, CloudError, ErrorKind, StopFlag, remembered_refusal
from orchestrator.core.model import AFTER_COPY_PHASES, SLOT_PHASES, Item, Phase
from orchestrator.core.outcome import Stop, is_done, is_finished, outcome_of
from orchestrator.engine.afterqueue import AfterCopies
from orchestrator.engine.context import RunContext, log
from orchestrator.engine.firstpolls import FirstPolls
from orchestrator.engine.lifecycle import Driver
from orchestrator.engine.outage import endpoint_of
from orchestrator.engine.preflight import preflight
from orchestrator.engine.targets import adopt_found
from orchestrator.engine.window import Window
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import Store

_RETRIED = frozenset({Phase.FAILED, Phase.REJECTED})  # --retry-failed gives them a new attempt
PROBE_CONCURRENCY = 16  # tenants whose credentials are checked at the same time
SAVE_BATCH = 2000  # items saved by one commit when many change at once (preflight's verdicts)


@dataclass(frozen=True)
class RunOptions:
    deadline_at: float | None = None  # on the context's clock
    retry_failed: bool = False


@dataclass
class RunResult:
    exit_code: int
    reason: str
    windows: dict[str, Window] = field(default_factory=dict)
    skipped: bool = False  # the list was already finished: nothing was called
    advice: str = ""  # what to do next: only the actions that apply (core/outcome.py)


async def store_merged(store: Store, items: Iterable[Item], meta: RunMeta | None = None) -> None:
    """Commit the items of :func:`merge_list` that differ from the stored ones, before a run.

    An item the list did not change is the stored object itself: a resumed 100,000-row list
    costs one look-up per item and writes nothing. A new list is saved SAVE_BATCH items per
    commit (its journal lines never all in memory at once), ``meta`` with the last batch."""
    stored = store.items
    changed = [item for item in items if (old := stored.get(item.key)) is not item and old != item]
    batches = [changed[at : at + SAVE_BATCH] for at in range(0, len(changed), SAVE_BATCH)] or [[]]
    for batch in batches[:-1]:
        await store.commit(batch)
    await store.commit(batches[-1], meta=meta)


async def _wait(window: Window, clock: Clock, until: float | None, stop: StopFlag) -> None:
    """Until the window changes, the clock reaches ``until``, or submitting must stop.

    Without a time (the usual wait: for a slot), no task watches ``stop``: the windows are
    woken when it is set (:meth:`Engine._wake_on_halt`), and it is checked before waiting
    (nothing can set it between the check and the wait: no await between them)."""
    if until is None:
        if not stop.is_set():
            await window.changed()
        return
    async with anyio.create_task_group() as group:

        async def sleeper() -> None:
            await clock.sleep(max(0.0, until - clock.now()))
            group.cancel_scope.cancel()

        async def stopper() -> None:
            await stop.wait()
            group.cancel_scope.cancel()

        group.start_soon(sleeper)
        group.start_soon(stopper)
        await window.changed()
        group.cancel_scope.cancel()


class Engine:
    def __init__(self, ctx: RunContext, options: RunOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.windows: dict[str, Window] = {}
        self.window_of: dict[str, Window] = {}  # tenant -> window
        self.driving: dict[str, tuple[anyio.CancelScope, Item]] = {}  # item key -> its drive
        self.after: AfterCopies | None = None  # copies made, waiting to be verified and carried
        self.first_polls: FirstPolls | None = None  # a resume's checks wait for its first polls
        # Drive tasks between two items, each waiting for its next (:meth:`_hand`); None ends it.
        self._idle: list[asyncio.Future[tuple[Window, Item] | None]] = []
        self._serving = 0  # windows' servers still handing out items (:meth:`_start`)
        self._closed = False  # none hands out items any more: a drive task ends when idle

    # -- phases of a run ------------------------------------------------------------------------

    async def run(self, items: list[Item]) -> RunResult:
        """Run ``items`` (from :func:`merge_list`, stored already: :func:`store_merged`).

        Once read, the items are let go: each one's state is the store's from then on, and a
        caller that drops its own list before awaiting frees the loaded versions (memory)."""
        ctx = self.ctx
        meta = ctx.store.meta
        if is_finished(items) and not self.options.retry_failed and meta.last_exit is not None:
            again = outcome_of(
                items, blocked=meta.blocked, quota_full=(), stop=None, unavailable={}
            )
            reason = meta.last_reason or "the list was already finished"
            return RunResult(meta.last_exit, reason, skipped=True, advice=again.advice)
        # One pass over the items (100,000 of them on a resumed list). --retry-failed on a list
        # that ended with failures must still reach their tenants.
        retry = self.options.retry_failed
        current: dict[str, Item] = {}
        active: set[str] = set()
        region_of: dict[str, str] = {}  # where each tenant's credentials are probed
        in_flight: dict[str, list[Item]] = defaultdict(list)  # by tenant, checks after a copy too
        copies = False  # a copy in flight among them
        for item in items:  # (each look spelled out once: it runs before the first poll)
            row, phase = item.row, item.phase
            tenant = row.tenant
            current[row.key] = item
            if tenant not in region_of:
                region_of[tenant] = row.source_region
            if phase in SLOT_PHASES:
                in_flight[tenant].append(item)
                copies = True
            elif phase in AFTER_COPY_PHASES:
                in_flight[tenant].append(item)
            if tenant not in active and (
                not is_done(item) or (retry and item.listed and phase in _RETRIED)
            ):
                active.add(tenant)
        del items  # the loaded versions: not kept for the run (see above)
        keys = list(current)
        await self._work(current, sorted(active), region_of, in_flight, copies=copies)
        final = [ctx.store.items[key] for key in keys]
        found = outcome_of(
            final,
            blocked=ctx.blocked,
            blocked_for_run=ctx.blocked_for_run,
            quota_full=ctx.quota_blocked,
            stop=ctx.stopped,
            unavailable={**ctx.unavailable, **ctx.outages.messages()},
        )
        return RunResult(found.code, found.reason, self.windows, advice=found.advice)

    async def _work(
        self,
        current: dict[str, Item],
        active_tenants: list[str],
        region_of: Mapping[str, str],
        in_flight: dict[str, list[Item]],
        *,
        copies: bool,
    ) -> None:
        """Probe, check, then keep the windows busy; a stop cancels all of it at once.

        The copies a resumed run finds in flight, and the checks after a copy, are followed as
        soon as their tenant's probe answers (a resumed 1,000-tenant list polls within a
        second, not after every target region is listed); nothing is submitted before every
        tenant is probed, so that each account's window counts all its copies. With ``copies``
        in flight, the checks start once each is polled (engine/firstpolls.py).
        """
        ctx = self.ctx
        followed: set[str] = set()
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as work_scope:

                async def on_stop() -> None:
                    await ctx.stop.wait()
                    work_scope.cancel()

                outer.start_soon(on_stop)
                outer.start_soon(self._wake_on_halt)
                if self.options.deadline_at is not None:
                    outer.start_soon(self._deadline_watch, self.options.deadline_at)
                outer.start_soon(self._outage_watch)
                async with anyio.create_task_group() as work:
                    self.after = AfterCopies(ctx, work)
                    first_polls = None
                    if copies:
                        timing = ctx.config.timing
                        longest = timing.poll_max + timing.request_timeout
                        first_polls = FirstPolls(self.after, ctx.clock, longest)
                        self.first_polls = first_polls
                        work.start_soon(first_polls.release)

                    def follow(tenant: str) -> None:
                        window = self.window_of[tenant]
                        for item in in_flight.pop(tenant, []):
                            followed.add(item.key)
                            if item.phase.is_after_copy:
                                self._after_copy(item)  # no slot: the copy is made
                                continue
                            window.take()
                            if first_polls is not None:
                                first_polls.follow(item.key)
                            self._hand(work, window, item)

                    await self._probe(active_tenants, region_of, follow)
                    if first_polls is not None:
                        first_polls.probed()
                    await self._prepare(current)
                    self._start(work, current, followed)
                    current.clear()  # each item's state is the store's from here on (memory)
            outer.cancel_scope.cancel()

    async def _prepare(self, current: dict[str, Item]) -> None:
        """--retry-failed, then the preflight of items never checked; ``current`` is updated."""
        ctx = self.ctx
        usable = {t for t in self.window_of if t not in ctx.blocked and t not in ctx.unavailable}
        if self.options.retry_failed:
            for item in await self._retry_failed(list(current.values()), usable):
                current[item.key] = item
        # Preflight sets ``copy_name``; an item that has one was checked by an earlier run (a
        # new row, an edited one or a retried one has none): its source is not looked up again,
        # but its target is (below): the checkpoint may be wrong, the cloud is not.
        pending = [
            item
            for item in current.values()
            if item.phase == Phase.PENDING
            and item.listed
            and item.row.tenant in usable
            and item.copy_name is None
        ]
        if pending:
            await self._preflight(current, pending)
        usable -= ctx.unavailable.keys()
        await self._look_for_copies(current, usable)

    async def _preflight(self, current: dict[str, Item], pending: list[Item]) -> None:
        ctx = self.ctx
        checked = await preflight(pending, ctx.clouds, ctx.config, ctx.targets)
        for tenant, error in checked.tenant_errors.items():
            await self._tenant_error(tenant, error)
        changed = [item for item in checked.items if item != current[item.key]]
        await self._save_many(changed, "item.preflight")
        for item in changed:
            current[item.key] = item
        for item, image in checked.stale:
            log.warning(
                "item.stale_copy",
                tenant=item.row.tenant,
                item=item.key,
                target_image_id=image.id,
                status=image.status,
                advice="a broken copy of this item is in the target region: delete it",
            )

    async def _save_many(self, items: Sequence[Item], event: str) -> None:
        """A commit per SAVE_BATCH items: 100,000 verdicts' journal lines are never all in
        memory at once (50 MB), and a few dozen fsyncs cost next to nothing."""
        for start in range(0, len(items), SAVE_BATCH):
            await self.ctx.save_many(items[start : start + SAVE_BATCH], event)

    async def _look_for_copies(self, current: dict[str, Item], usable: Set[str]) -> None:
        """Every item this run may submit is looked for in its target region first, whatever
        the checkpoint says (design I2); a copy carrying its token is adopted, not copied."""
        ctx = self.ctx
        waiting = [
            item
            for item in current.values()
            if item.phase == Phase.PENDING and item.listed and item.row.tenant in usable
        ]
        adopted, failed = await adopt_found(ctx.targets, waiting, ctx.clock.now)
        for tenant, error in failed.items():
            await self._tenant_error(tenant, error)
        await self._save_many(adopted, "item.adopted")
        current.update((item.key, item) for item in adopted)

    async def _probe(
        self,
        tenants: Sequence[str],
        region_of: Mapping[str, str],
        on_ready: Callable[[str], None],
    ) -> None:
        """Check each tenant's credentials with one request before anything else is sent for
        it (design I5), and join it to its account's window; ``on_ready`` then hears of it."""
        ctx = self.ctx
        remembered = dict(ctx.store.meta.blocked)
        to_probe: list[str] = []
        for tenant in tenants:
            old = remembered.get(tenant)
            if not (old and remembered_refusal(old.code)):
                remembered.pop(tenant, None)  # a permission, not the key: ask again (once)
            elif old.fingerprint == ctx.fingerprints.get(tenant, ""):
                ctx.blocked[tenant] = old
                log.error(
                    "tenant.still_blocked",
                    tenant=tenant,
                    error_code=old.code,
                    error_message=old.message,
                    advice=blocked_advice(tenant, ctx.config.tenant(tenant)),
                )
                continue
            to_probe.append(tenant)
        # 1,000 tenants: not one after another, but PROBE_CONCURRENCY at a time, in their order,
        # each prober taking the next tenant (no task and no wait for a limiter per tenant: a
        # resumed run probes while its first polls are due).
        queue = iter(to_probe)

        async def prober() -> None:
            for tenant in queue:
                try:
                    domain = await ctx.clouds[tenant].probe(region_of[tenant])
                except CloudError as error:
                    await self._tenant_error(tenant, error)
                    continue
                self._join(tenant, domain)
                on_ready(tenant)

        async with anyio.create_task_group() as group:
            for _ in range(min(PROBE_CONCURRENCY, len(to_probe))):
                group.start_soon(prober)
        lasting = ctx.lasting_blocks()
        unblocked = {t: v for t, v in remembered.items() if t in lasting or t not in tenants}
        blocked = {**unblocked, **lasting}
        if blocked != ctx.store.meta.blocked:
            await ctx.store.commit(meta=replace(ctx.store.meta, blocked=blocked))

    def _join(self, tenant: str, domain: str) -> None:
        """The tenant's window: its account's (IAM domain), shared with the account's other
        tenants of the config."""
        key = domain or f"tenant:{tenant}"
        window = self.windows.get(key)
        if window is None:
            timing = self.ctx.config.timing
            window = Window(
                key,
                self.ctx.config.max_concurrent_copies,
                backoff_min=timing.poll_min,
                backoff_max=timing.backoff_max,
                order=self.ctx.config.scheduling.order,
            )
            self.windows[key] = window
        self.window_of[tenant] = window

    async def _tenant_error(self, tenant: str, error: CloudError) -> None:
        if error.kind == ErrorKind.AUTH:
            await self.ctx.block_tenant(tenant, error)
        else:
            self.ctx.unavailable[tenant] = str(error)
            log.warning("tenant.unavailable", tenant=tenant, error_message=str(error))

    async def _retry_failed(self, items: Sequence[Item], usable: Set[str]) -> list[Item]:
        """--retry-failed: failed and rejected items get a new attempt; a job that may still be
        alive in the cloud is polled first and adopted rather than copied again."""
        out = []
        for item in items:
            if not item.listed or item.row.tenant not in usable or item.row.problem:
                continue  # a row the list refuses is fixed in the list, never retried
            if item.phase == Phase.REJECTED or (item.phase == Phase.FAILED and not item.job_id):
                retried = item.new_attempt(
                    "retry requested", error_code=None, error_message=None, copy_name=None
                )
            elif item.phase == Phase.FAILED and item.job_id:
                retried = await self._retry_with_job(item)
            else:
                continue
            out.append(await self.ctx.save(retried, "item.retry"))
        return out

    async def _retry_with_job(self, item: Item) -> Item:
        row = item.row
        assert item.job_id is not None  # noqa: S101 -- checked by the caller
        again = replace(item, attempt=item.attempt + 1, submitted_at=self.ctx.clock.now())
        try:
            job = await self.ctx.clouds[row.tenant].get_job(
                row.source_region, item.job_id, project=row.source_project
            )
        except CloudError:
            return again.advance(
                Phase.RECONCILING,
                unknown_since=self.ctx.clock.now(),
                detail="retry: old job unknown, looking for its copy",
                error_code=None,
                error_message=None,
            )
        if job.status == JOB_FAIL:
            return item.new_attempt(
                "retry requested", error_code=None, error_message=None, copy_name=None
            )
        return again.advance(
            Phase.RUNNING, detail="retry: adopting the old job", error_code=None, error_message=None
        )

    # -- scheduling -----------------------------------------------------------------------------

    def _start(
        self, work: anyio.abc.TaskGroup, current: dict[str, Item], followed: set[str]
    ) -> None:
        """Every window gets its pending items and starts submitting; copies in flight not
        followed yet (adopted by --retry-failed) are followed now."""
        for item in current.values():
            window = self.window_of.get(item.row.tenant)
            if window is None:
                continue
            if item.phase.holds_slot and item.key not in followed:
                window.take()
                self._hand(work, window, item)
            elif (
                item.phase.is_after_copy
                and item.key not in followed  # adopted by preflight or a look in the target
                and item.row.tenant not in self.ctx.blocked
            ):
                self._after_copy(item)  # no slot: the copy is made
            elif item.phase == Phase.PENDING and item.listed:
                window.enqueue(item)
        self._serving += len(self.windows)
        for window in self.windows.values():  # also those whose followed copies come back
            work.start_soon(self._serve, window, work)
        if not self._serving:
            self._close()

    async def _wake_on_halt(self) -> None:
        """Submitting stops: every window's server wakes to see it (its wait for a slot has
        no watcher of its own, see :func:`_wait`)."""
        await self.ctx.no_more_submits.wait()
        for window in self.windows.values():
            window.wake()

    async def _deadline_watch(self, deadline_at: float) -> None:
        await self.ctx.clock.sleep(max(0.0, deadline_at - self.ctx.clock.now()))
        self.ctx.request_stop(Stop.deadline())

    async def _outage_watch(self) -> None:
        """Every few seconds: an endpoint down for ``[timing] outage`` is given up for this run
        (its copies' states are durable: the next run follows them)."""
        ctx = self.ctx
        every = max(0.05, min(5.0, ctx.config.timing.outage / 10))
        while True:
            await ctx.clock.sleep(every)
            for outage in ctx.outages.check(ctx.clock.now()):
                log.error(
                    "endpoint.outage",
                    endpoint=outage.endpoint,
                    seconds=round(outage.seconds, 1),
                    error_message=outage.last_error,
                    advice="the run stops using this endpoint; run again once it answers",
                )
                for scope, item in list(self.driving.values()):
                    if self._needs_down(item):
                        scope.cancel()
                for window in self.windows.values():
                    window.drop(self._needs_down)

    def _needs_down(self, item: Item) -> bool:
        """The item's calls go to an endpoint found down."""
        down = self.ctx.outages.down
        if not down:
            return False
        row, config = item.row, self.ctx.config
        tenant = config.tenant(row.tenant)
        return (
            endpoint_of(config, tenant, row.source_region) in down
            or endpoint_of(config, tenant, row.target_region) in down
        )

    def _may_submit(self, item: Item) -> bool:
        row = item.row
        return (
            row.tenant not in self.ctx.blocked
            and (row.tenant, row.target_region) not in self.ctx.quota_blocked
            and not self._needs_down(item)
        )

    async def _serve(self, window: Window, work: anyio.abc.TaskGroup) -> None:
        clock = self.ctx.clock
        try:
            while not self.ctx.no_more_submits.is_set():
                now = clock.now()
                item = window.next_ready(now)
                if item is not None:
                    if self._may_submit(item):
                        window.take()
                        self._hand(work, window, item)
                    continue
                if not window.has_work():
                    return
                await _wait(window, clock, window.wake_at(now), self.ctx.no_more_submits)
        finally:
            self._serving -= 1
            if not self._serving:
                self._close()

    def _hand(self, work: anyio.abc.TaskGroup, window: Window, item: Item) -> None:
        """``item``, its slot taken, to a drive task waiting for its next item, or to a new one.

        A task per item was a spawn each (an anyio task: its handle, cancel scope and event, an
        asyncio task, ~20 us of CPU); the drive tasks, once their item is done, wait here for
        the next instead. The window's server still picks every item and takes its slot: the
        cap, the order and the tenants' turns are the window's, as they were."""
        idle = self._idle
        while idle:
            waiter = idle.pop()  # the last one idle: its memory is the likeliest still cached
            if not waiter.done():  # (cancelled: the run is ending, that task with it)
                waiter.set_result((window, item))
                return
        work.start_soon(self._drive, window, item)

    def _close(self) -> None:
        """No item is handed out any more (every window's server has ended): the drive tasks
        waiting for one end now, the others once their item is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    async def _drive(self, window: Window, item: Item) -> None:
        """Drive ``item``, then each item :meth:`_hand` gives this task, until none comes.

        (One loop, no method per item: each frame here is passed through at every resume of
        the drive, each answer and each poll's wake.)"""
        loop = asyncio.get_running_loop()
        while True:
            first, key = self.first_polls, item.key
            polled = first.hook(key) if first is not None else None
            with anyio.CancelScope() as scope:  # cancelled when its endpoint is found down
                self.driving[key] = (scope, item)
                try:
                    outcome = await Driver(self.ctx, window, item, polled).run()
                finally:
                    del self.driving[key]
                    window.release()
                    if polled is not None:  # ended, polled or not: the checks wait no more
                        polled()
            if scope.cancelled_caught:
                pass
            elif outcome.item.phase == Phase.PENDING and self._may_submit(outcome.item):
                window.enqueue(outcome.item, outcome.retry_at)
            elif outcome.item.phase.is_after_copy:  # the copy is made: its slot is free already
                # This task goes on with the steps after the copy if their line has room (no
                # task started per item for them), else the item waits in line
                # (engine/afterqueue.py).
                assert self.after is not None  # noqa: S101 -- made before any item is driven
                await self.after.carry_on(outcome.item)
            if self._closed:
                return
            waiter: asyncio.Future[tuple[Window, Item] | None] = loop.create_future()
            self._idle.append(waiter)
            job = await waiter
            if job is None:
                return
            window, item = job

    def _after_copy(self, item: Item) -> None:
        """Verify and carry ``item`` when its turn comes (a few at a time: engine/afterqueue)."""
        assert self.after is not None  # noqa: S101 -- made before any item is driven
        self.after.add(item)
