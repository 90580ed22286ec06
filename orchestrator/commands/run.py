"""One ``ims-migrate run``: lock, load, check, build the clients, run the engine, save.

Everything here happens in the order the invariants need: the lock before any heavy work (a
second run exits 75 at once and writes nothing), the list and the credentials checked before
any call (exit 2), the state saved before any POST. No printing: the CLI shows the result.

(Just over 400 lines: one command's steps in the order the invariants need; its values and
checks live in commands/common.py and the engine.)
"""

from __future__ import annotations

import contextlib
import functools
import gc
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import anyio
import anyio.abc

from orchestrator import early_signals, fast_exit, logs, profiling
from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import (
    StoppedAtOnce,
    TenantCredentials,
    UsageError,
    check_filters,
    check_owner,
    state_dir_for,
    tenant_credentials,
)
from orchestrator.config import Config
from orchestrator.core.credentials import credential_fingerprint
from orchestrator.core.model import Item
from orchestrator.core.outcome import Stop, StopReason, is_done, is_shown, merge_list
from orchestrator.core.speed import RouteSpeeds, SpeedModel
from orchestrator.engine.context import Counters, RunContext, SubmitStop, log
from orchestrator.engine.scheduler import (
    Engine,
    RunOptions,
    store_merged,
)
from orchestrator.engine.window import Window
from orchestrator.eventloop import loop_name
from orchestrator.manifest import ListFile, Manifest, Problem, parse_list, read_list
from orchestrator.output.report import csv_parts, explained
from orchestrator.state.atomic import write_atomic
from orchestrator.state.checkpoint import (
    CheckpointStore,
    acquire_lock,
    check_lock,
    release_lock,
    set_aside_damage,
)
from orchestrator.state.gcpause import collector_paused, freeze_loaded, run_thresholds
from orchestrator.state.meta import BlockedKey
from orchestrator.state.recall import recall, remember
from orchestrator.state.store import StoreError

REPORT = "report.csv"
REPORT_TEMP = ".report-"


@dataclass(frozen=True)
class RunRequest:
    list_path: Path
    config: Config
    environ: Mapping[str, str]
    state_dir: Path | None = None
    deadline_seconds: float | None = None
    retry_failed: bool = False
    repair_state: bool = False  # a damaged state is set aside and rebuilt from the list
    max_failures: int | None = None
    max_failure_ratio: float | None = None
    tenants: frozenset[str] = frozenset()
    source_regions: frozenset[str] = frozenset()
    target_regions: frozenset[str] = frozenset()


@dataclass
class RunSummary:
    exit_code: int
    reason: str
    state_dir: Path
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    windows: dict[str, Window] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    skipped: bool = False
    blocked: dict[str, BlockedKey] = field(default_factory=dict)
    blocked_for_run: set[str] = field(default_factory=set)  # not remembered: asked again next run
    outages: dict[str, str] = field(default_factory=dict)  # endpoint -> what happened
    quota_full: dict[tuple[str, str], str] = field(default_factory=dict)  # -> the cloud's words
    advice: str = ""  # what to do next (core/outcome.py): only the actions that apply


def write_report(state_dir: Path, items: list[Item]) -> None:
    """``report.csv`` rewritten atomically (temp file in the same folder, then rename)."""
    try:
        write_atomic(state_dir / REPORT, csv_parts(items), durable=False, prefix=REPORT_TEMP)
    except OSError as exc:  # disk full: exit 74, like any other part of the state
        raise StoreError(
            f"cannot write the report {state_dir / REPORT}: {exc.strerror or exc} "
            "(free disk space or fix permissions, then run again)"
        ) from exc


def peak_rss_kib() -> float:
    """This process's peak resident memory. Linux's VmHWM counts this program only; getrusage's
    ru_maxrss also counts what the parent held when it forked us (kept across exec)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def sweep_report_temps(state_dir: Path) -> None:
    """Temp files of a report write cut short by a kill (under the lock, at start)."""
    for stale in state_dir.glob(REPORT_TEMP + "*"):
        stale.unlink(missing_ok=True)


def _selected(item: Item, request: RunRequest) -> bool:
    return item.row.matches(request.tenants, request.source_regions, request.target_regions)


def open_with_list(
    request: RunRequest, source: ListFile, store: CheckpointStore
) -> tuple[Manifest, list[Item], bool]:
    """Open the store and give the run's items: the checkpoint's, updated by the list.

    A state dir that remembers this very list gives them straight from its checkpoint (a
    resumed 100,000-row list is not checked again: the third value says so); a new state dir
    is only created once the list is known to be readable (a bad list leaves nothing behind).
    """
    if not store.exists():
        manifest = parse_list(source, request.config)
        store.open()
        return manifest, merge_list(store.items, manifest.rows, manifest.rejected), False
    store.open()
    check_owner(store.meta, request.list_path, store.state_dir)
    recalled = recall(store.meta.checked_list, source, store.items)
    if recalled is not None:
        return *recalled, True
    manifest = parse_list(source, request.config)
    return manifest, merge_list(store.items, manifest.rows, manifest.rejected), False


async def save_list(
    store: CheckpointStore, owner: str, manifest: Manifest, items: list[Item]
) -> None:
    """Store the whole list (chosen rows or not) with what lets the next run recall it;
    ``owner`` is the list's resolved path (the state dir belongs to it)."""
    if store.meta.checked_list is not None:
        # Forgotten first: should a crash keep only part of the next commit, the old
        # fingerprint must not vouch for rows this list changed.
        await store.commit(meta=replace(store.meta, checked_list=None))
    # The last run's outcome described the list as it was: a changed list is judged afresh.
    meta = replace(
        store.meta,
        list_path=owner,
        checked_list=remember(manifest),
        last_exit=None,
        last_reason=None,
    )
    await store_merged(store, items, meta=meta)


@dataclass
class _Stops:
    """A signal's stop, heard from the very start of the run (loading a large list takes a
    while); :meth:`relay` hands it to the run's context, from a task of the run (whose log
    lines go to the state dir's events.jsonl). ``submits`` is the run's "no more copy
    requests" flag (the context's ``no_more_submits``), tripped by the signal's own handler."""

    stop: Stop | None = None
    heard_event: anyio.Event = field(default_factory=anyio.Event)
    ctx: RunContext | None = None  # the run's, once it has one
    collector: bool | None = None  # gc was enabled when paused (None: not paused)
    submits: SubmitStop = field(default_factory=SubmitStop)

    def heard(self, stop: Stop) -> None:
        self.submits.trip()  # (a signal's handler has tripped it already)
        profiling.profile_stop()  # IMS_MIGRATE_PROFILE_STOP: what the stop spends its time on
        self.stop = stop
        if self.ctx is not None:  # at once: no copy request may start after this line,
            self.ctx.halt_submits()
            self.ctx.store.hurry()  # and no compaction hold the stop up
            self.pause_collector()
        self.heard_event.set()

    async def relay(self, ctx: RunContext) -> None:
        self.ctx = ctx
        await self.heard_event.wait()
        assert self.stop is not None  # noqa: S101 -- set before the event
        self.pause_collector()  # a signal heard while loading: the run's own pause is over
        ctx.request_stop(self.stop)

    def pause_collector(self) -> None:
        """No cyclic collection from the stop to the end of the run: a full one walks every
        object the run made (a second or more at 100,000 items) and frees nothing the stop
        needs; the process exits soon after (:func:`resume_collector` when the run ends)."""
        if self.collector is None:
            self.collector = gc.isenabled()
            gc.disable()

    def resume_collector(self) -> None:
        """The collector as it was before the stop; but in a process that ends without its
        teardown once the command is done (``fast_exit.armed``), it stays paused: what is left
        to do (the summary, the last lines) allocates enough to start a full collection of
        everything the run made (a second at 100,000 items), and nothing needs freeing."""
        if self.collector and not fast_exit.armed():
            gc.enable()
        self.collector = None


SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.asynccontextmanager
async def _signals(stops: _Stops) -> AsyncIterator[None]:
    """SIGINT/SIGTERM: stop submitting, save, exit 75. A second signal stops at once.

    Heard twice. The event loop's receiver (``loop.add_signal_handler``) hands the signal to
    the run a loop turn or two after it came: the C-level handler only writes the signal's
    number to the loop's wakeup fd, and the loop reads it between two batches of callbacks,
    in which other requests go on passing their last check before the wire. So the Python-level
    handler the receiver installs (a no-op) is replaced by :func:`trip`, which Python runs in
    the loop's thread at the next bytecode after the signal: it trips the "no more copy
    requests" flag that the client reads last (``SEND_STOP``). The C-level handler and the
    wakeup fd stay as the receiver set them (``set_wakeup_fd``: the number is written for any
    signal with a Python handler), so the receiver still hears every signal."""

    def trip(_signum: int, _frame: FrameType | None) -> None:
        stops.submits.trip()  # an attribute write: safe between any two bytecodes

    async with anyio.create_task_group() as group:

        async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(*SIGNALS) as received:
                for signum in SIGNALS:
                    signal.signal(signum, trip)
                task_status.started()
                count = 0
                async for signum in received:
                    count += 1
                    stops.heard(Stop.signal(signal.Signals(signum).name))
                    if count > 1:
                        group.cancel_scope.cancel()

        await group.start(watch)  # the receiver is installed before the run goes on
        for signum in early_signals.take():  # heard while the tool was still being imported
            stops.heard(Stop.signal(signal.Signals(signum).name))
        try:
            yield
        finally:
            group.cancel_scope.cancel()
            stops.resume_collector()


StoreFactory = Callable[[Path], CheckpointStore]


@dataclass(frozen=True)
class _Seams:
    """What a run talks to: the clouds, the store, the clock, and the callers' callbacks."""

    clouds: CloudFactory
    store: StoreFactory
    clock: Clock
    on_change: Callable[[Item], None] | None
    on_start: Callable[[RunContext, list[Item]], None] | None
    handle_signals: bool
    check_lock: Callable[[], None] = lambda: None  # LockLost once the lock is not ours
    stops: _Stops = field(default_factory=_Stops)


async def execute_run(
    request: RunRequest,
    *,
    clouds: CloudFactory = open_clouds,
    store: StoreFactory = CheckpointStore,
    clock: Clock | None = None,
    on_change: Callable[[Item], None] | None = None,
    on_start: Callable[[RunContext, list[Item]], None] | None = None,
    handle_signals: bool = True,
) -> RunSummary:
    """One run of the list. ``clouds`` opens the tenants' clouds (default: HTTP clients from
    the credentials), ``store`` opens the state dir's checkpoint, ``clock`` tells the time."""
    seams = _Seams(clouds, store, clock or RealClock(), on_change, on_start, handle_signals)
    async with contextlib.AsyncExitStack() as stack:
        if handle_signals:  # from the start: a signal while the list loads exits 75 too
            await stack.enter_async_context(_signals(seams.stops))
        stack.enter_context(run_thresholds())  # fewer young collections (state/gcpause.py)
        return await _execute_run(request, seams)
    # Only a second signal gets here: it cancelled the run at once (exit 75, run again later).
    raise StoppedAtOnce("stopped at once by a second signal")


async def _execute_run(request: RunRequest, seams: _Seams) -> RunSummary:
    list_path = request.list_path
    if list_path.is_dir():
        raise UsageError(f"{list_path}: is a folder, not a migration list (.csv or .jsonl)")
    if not list_path.is_file():
        raise UsageError(f"{list_path}: no such file (the migration list)")
    state_dir = state_dir_for(list_path, request.state_dir)
    lock_fd = acquire_lock(state_dir)  # LockHeld propagates: exit 75
    seams = replace(seams, check_lock=functools.partial(check_lock, state_dir, lock_fd))
    try:
        return await _locked_run(request, state_dir, seams)
    finally:
        release_lock(lock_fd)


async def _locked_run(request: RunRequest, state_dir: Path, seams: _Seams) -> RunSummary:
    loading = time.perf_counter()
    source = read_list(request.list_path, request.config)  # ManifestError: exit 2
    set_aside = set_aside_damage(state_dir) if request.repair_state else []
    store = seams.store(state_dir)
    store.lock_check = seams.check_lock
    try:
        with collector_paused():
            manifest, items, recalled = open_with_list(request, source, store)
            del source  # the list's bytes: read (memory)
            freeze_loaded(len(items))  # out of the garbage collector's sight
        sweep_report_temps(state_dir)
        loaded = time.perf_counter() - loading
        filters = (request.tenants, request.source_regions, request.target_regions)
        filtered = any(filters)  # passes over 100,000 items before the first poll: none idle
        chosen = [item for item in items if _selected(item, request)] if filtered else items
        active: set[str] = set()  # the tenants whose credentials are needed
        retry = request.retry_failed
        for item in chosen:
            tenant = item.row.tenant
            if tenant not in active and (
                not is_done(item) or (retry and item.listed and item.phase.is_terminal)
            ):
                active.add(tenant)
        if filtered:  # one that matches no row is a typo
            check_filters(request.list_path, filters, [item.row for item in items if item.listed])
        credentials = tenant_credentials(request.config, request.environ, active)
        with logs.events_to(state_dir):
            for problem in manifest.problems:  # the terminal shows the same words (cli/run.py)
                log.error("list.bad_row", line=problem.line, error_message=str(problem))
            for warning in manifest.warnings:
                log.warning("list.warning", line=warning.line, error_message=str(warning))
            for path in set_aside:
                log.warning("state.set_aside", path=str(path), advice="the state was rebuilt")
            log.info(
                "run.loaded",
                items=len(items),
                list_checked=not recalled,  # False: the list is the one the checkpoint remembers
                seconds=round(loaded, 3),
                event_loop=loop_name(),
            )
            running = _run_with_clients(
                request, state_dir, store, manifest, items, chosen, credentials, recalled, seams
            )
            del items, chosen  # the run lets the loaded versions go (_run_with_clients)
            return await running
    finally:
        store.close()


async def _run_with_clients(
    request: RunRequest,
    state_dir: Path,
    store: CheckpointStore,
    manifest: Manifest,
    items: list[Item],
    chosen: list[Item],
    credentials: TenantCredentials,
    recalled: bool,
    seams: _Seams,
) -> RunSummary:
    """``items`` and ``chosen``: the caller's, which it does not keep (the loaded versions of
    100,000 items are let go as the run starts; the store holds each item's state)."""
    clock = seams.clock
    config = request.config
    if not recalled:
        await save_list(store, str(request.list_path.resolve()), manifest, items)
    shown = [item.row.key for item in items if is_shown(item)]  # the report's rows, in list order
    del items
    speed = RouteSpeeds(SpeedModel(samples=list(store.meta.speed_samples)))
    async with seams.clouds(config, credentials, clock) as clouds:
        max_failures = request.max_failures
        if request.max_failure_ratio is not None:
            count = max(1, round(request.max_failure_ratio * len(chosen)))
            max_failures = min(max_failures or count, count)
        ctx = RunContext(
            config=config,
            clock=clock,
            store=store,
            clouds=clouds,
            speed=speed,
            fingerprints={n: credential_fingerprint(c) for n, (_, c) in credentials.items()},
            on_change=seams.on_change,
            max_failures=max_failures,
            no_more_submits=seams.stops.submits,  # tripped by a signal's handler (_signals)
        )
        if seams.on_start is not None:
            seams.on_start(ctx, chosen)
        deadline_at = clock.now() + request.deadline_seconds if request.deadline_seconds else None
        engine = Engine(ctx, RunOptions(deadline_at=deadline_at, retry_failed=request.retry_failed))
        async with anyio.create_task_group() as relay:
            relay.start_soon(seams.stops.relay, ctx)
            running = engine.run(chosen)
            del chosen  # the engine lets them go once read
            result = await running
            relay.cancel_scope.cancel()
    final = [store.items[key] for key in shown]
    final = explained(final, {**store.meta.blocked, **ctx.blocked})
    seams.check_lock()  # lost: the state may be another run's now, leave it be
    if not result.skipped:
        await store.commit(
            meta=replace(
                store.meta,
                last_exit=result.exit_code,
                last_reason=result.reason,
                last_end=clock.now(),
                speed_samples=tuple(ctx.speed.overall.samples[-200:]),
            )
        )
        if ctx.stopped is None or ctx.stopped.reason is not StopReason.SIGNAL:
            store.compact_now()  # a signal wants a fast exit: the journal is durable as it is
    write_report(state_dir, final)
    exit_code, reason = result.exit_code, result.reason  # what the meta stores, said as is
    counters = ctx.counters
    log.info(
        "run.finished",
        exit_code=exit_code,
        reason=reason,
        advice=result.advice,
        items=len(final),
        submissions=counters.submissions,
        polls=counters.polls,
        first_poll_at=counters.first_poll_at,
        first_poll_cpu_seconds=counters.first_poll_cpu,
        cpu_seconds=round(time.process_time(), 3),
        peak_rss_mib=round(peak_rss_kib() / 1024, 1),
        checkpoint_write_seconds=round(store.write_seconds, 3),
        checkpoint_cpu_seconds=round(store.cpu_seconds, 3),
        checkpoint_fsyncs=store.fsyncs,
        checkpoint_compactions=store.compactions,
    )
    return RunSummary(
        exit_code=exit_code,
        reason=reason,
        state_dir=state_dir,
        items=final,
        problems=manifest.problems,
        warnings=manifest.warnings,
        windows=result.windows,
        counters=ctx.counters,
        skipped=result.skipped,
        blocked=dict(ctx.blocked),
        blocked_for_run=set(ctx.blocked_for_run),
        outages={endpoint: str(outage) for endpoint, outage in ctx.outages.down.items()},
        quota_full=dict(ctx.quota_blocked),
        advice=result.advice,
    )
