"""Random histories of runs, kills, faults and resumes: the invariants hold after every step.

A Hypothesis state machine drives the real engine on virtual time against the in-memory cloud
(the simulator's world) and a durable in-memory store. A step is one of:

* a run killed at a random operation (a commit or a cloud call, before or after its effect:
  the process dies there, as with kill -9), or at a random virtual time, or run to its end
  (optionally with ``--retry-failed``); the next run starts from the store's durable items;
* a fault queued for the next request of an endpoint (5xx, 429, reset, hang, lost reply...);
* the world moving on by itself: a copy job failing, copies started outside the tool holding
  slots, hours passing while nothing runs; the list gaining or losing a row;
* a wrong state (the cloud is the truth, design I2): the journal damaged at a random line (cut
  there, or found bad and rebuilt by ``--repair-state``), the list run through a second state
  dir, the lock deleted while a run holds it (the run stops at its next save: a copy request only
  follows one, its intent).
  The first two only where a copy shows in the target listing at once: when it shows later, a
  state that lost a submission cannot be saved by the listing alone (a known limit).

After every step: no item copied twice (a second copy only after the first one failed), never
more than 5 copies in flight per account and no ``IMG.0060`` caused by the tool itself, attempt
counters never going down, phases never moving backwards within an attempt, and every item
terminal or resumable (with the fields its phase needs). At the end, faults off, the list is
run to completion: every listed item ends succeeded (with its copy active in the target and
carrying its token) unless the test failed its job on purpose.

Bounded for CI (``STATEFUL_EXAMPLES`` / ``STATEFUL_STEPS`` raise the counts for a soak run;
``STATEFUL_SEED`` replaces the fixed derandomised seed).
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from hypothesis import HealthCheck, seed, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator.core.cloud import CloudError, CopyRequest, ErrorKind, Image, Job, Quota
from orchestrator.core.model import FORWARD_WITHIN_ATTEMPT, Item, Phase, Row, item_key, item_token
from orchestrator.core.outcome import merge_list
from orchestrator.core.units import GIB
from orchestrator.engine.context import RunContext
from orchestrator.engine.scheduler import Engine, RunOptions, store_merged
from orchestrator.simulator.faults import COPY_ONLY, Fault, FaultPlan
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.simulator.jobs import LIVE
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.world import World
from orchestrator.state.checkpoint import LockLost
from orchestrator.state.meta import RunMeta
from tests.engine_harness import CONFIG, SOURCE
from tests.virtual_clock import VirtualClock

T = TypeVar("T")
CAP = CONFIG.max_concurrent_copies
ACCOUNTS = ("a", "b")
TARGETS = ("cn-east-3", "cn-south-1")
PERMANENT_FAIL = "IMG.0500"  # a job failure the tool does not retry
RETRIED_FAIL = "IMG.0060"  # a job failure the tool retries (a new attempt)
FINAL_RUNS = 6  # runs allowed to finish the list once faults are off
STUCK_AFTER = 30 * 86400.0  # a final run still going after this much virtual time is stuck


class Killed(BaseException):
    """The process died here (a simulated kill -9): nothing after it happens."""


WITHIN_ATTEMPT = FORWARD_WITHIN_ATTEMPT


@dataclass
class KillSwitch:
    """Counts operations (commits and cloud calls) and kills the process at the chosen one."""

    at: int | None = None
    after_effect: bool = False
    ops: int = 0
    dead: bool = False

    def arm(self, at: int | None, after_effect: bool = False) -> None:
        self.at, self.after_effect, self.ops, self.dead = at, after_effect, 0, False

    def before(self) -> bool:
        """Before an operation's effect: raises if the process is dead or dies now; True if it
        dies right after the effect."""
        if self.dead:
            raise Killed
        self.ops += 1
        if self.at is not None and self.ops >= self.at:
            self.dead = True
            if not self.after_effect:
                raise Killed
            return True
        return False


@dataclass
class Judge:
    """Watches every durable state change and what the cloud refused; collects violations."""

    latest: dict[str, Item] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def saw(self, item: Item) -> None:
        old = self.latest.get(item.key)
        if old is not None:
            if item.attempt < old.attempt:
                self.violations.append(f"{item.key}: attempt {old.attempt} -> {item.attempt}")
            elif (
                item.attempt == old.attempt
                and item.phase != old.phase
                and item.phase not in WITHIN_ATTEMPT[old.phase]
            ):
                self.violations.append(
                    f"{item.key}: {old.phase} -> {item.phase} within attempt {item.attempt}"
                )
        self.latest[item.key] = item


class DurableStore:
    """The ``Store`` seam: what is committed is durable, unless the process dies first."""

    def __init__(self, switch: KillSwitch, judge: Judge) -> None:
        self._items: dict[str, Item] = {}
        self._meta = RunMeta()
        self.switch = switch
        self.judge = judge
        self.lock_check: Callable[[], None] = lambda: None
        self.snapshot: dict[str, Item] = {}  # the items when the last run started
        self.journal: list[list[Item]] = []  # the batches committed since then

    def start_run(self) -> None:
        """A run starts from a fresh snapshot (the file store compacts as it opens)."""
        self.snapshot, self.journal = dict(self._items), []

    def cut_journal(self, lines: int) -> None:
        """The journal cut after ``lines`` batches (a damage that reads as a torn tail)."""
        self._items = dict(self.snapshot)
        for batch in self.journal[:lines]:
            self._items.update((item.key, item) for item in batch)
        self.journal = self.journal[:lines]
        self.judge.latest = dict(self._items)

    def rebuild(self) -> None:
        """``run --repair-state``: the damaged files set aside, the state rebuilt empty."""
        self._items, self._meta, self.snapshot, self.journal = {}, RunMeta(), {}, []
        self.judge.latest = {}

    @property
    def items(self) -> Mapping[str, Item]:
        return self._items

    @property
    def meta(self) -> RunMeta:
        return self._meta

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        batch = list(items)
        await anyio.lowlevel.checkpoint()  # a real save takes time (and can be cancelled)
        self.lock_check()
        dies = self.switch.before()
        if batch:
            self.journal.append(batch)
        for item in batch:
            self.judge.saw(item)
            self._items[item.key] = item
        if meta is not None:
            self._meta = meta
        if dies:
            raise Killed

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        await self.commit(items)  # never withdrawn: the driver checks the stop after it
        return True

    def hold_intents(self) -> None:
        """Nothing is withdrawn here."""

    def hurry(self) -> None:
        """No housekeeping to skip."""


class KillableCloud:
    """``TenantCloud`` over the in-memory cloud; dies with the process; judges IMG.0060."""

    def __init__(self, inner: InMemoryTenantCloud, switch: KillSwitch, machine: Machine) -> None:
        self.inner = inner
        self.switch = switch
        self.machine = machine

    async def _op(self, call: Callable[[], Awaitable[T]]) -> T:
        dies = self.switch.before()
        try:
            result = await call()
        except CloudError as error:
            if dies:
                raise Killed from None
            if error.kind == ErrorKind.BACK_PRESSURE:
                self.machine.judge_back_pressure(self.inner.account.name)
            raise
        if dies:
            raise Killed
        return result

    async def probe(self, region: str) -> str:
        return await self._op(lambda: self.inner.probe(region))

    async def list_images(
        self,
        region: str,
        *,
        project: str | None = None,
        name: str | None = None,
        image_id: str | None = None,
        private_only: bool = True,
        filters: Mapping[str, str] | None = None,
        priority: float = 0.0,
    ) -> list[Image]:
        return await self._op(
            lambda: self.inner.list_images(
                region,
                project=project,
                name=name,
                image_id=image_id,
                private_only=private_only,
                filters=filters,
            )
        )

    async def copy_image(
        self,
        region: str,
        image_id: str,
        request: CopyRequest,
        *,
        project: str | None = None,
    ) -> str:
        return await self._op(
            lambda: self.inner.copy_image(region, image_id, request, project=project)
        )

    async def get_job(
        self, region: str, job_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> Job:
        return await self._op(lambda: self.inner.get_job(region, job_id, project=project))

    async def get_quota(self, region: str, *, project: str | None = None) -> Quota:
        return await self._op(lambda: self.inner.get_quota(region, project=project))

    async def image_tags(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> dict[str, str]:
        return await self._op(lambda: self.inner.image_tags(region, image_id, project=project))

    async def add_image_tags(
        self,
        region: str,
        image_id: str,
        tags: Mapping[str, str],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        await self._op(lambda: self.inner.add_image_tags(region, image_id, tags, project=project))

    async def update_image(
        self,
        region: str,
        image_id: str,
        changes: Mapping[str, int],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        await self._op(lambda: self.inner.update_image(region, image_id, changes, project=project))

    async def image_members(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> list[str]:
        return await self._op(lambda: self.inner.image_members(region, image_id, project=project))

    async def delete_image(self, region: str, image_id: str, *, project: str | None = None) -> None:
        await self._op(lambda: self.inner.delete_image(region, image_id, project=project))


FAULTS_BY_KIND = {
    kind: [f.value for f in Fault if kind == "copy" or f not in COPY_ONLY]
    for kind in ("list", "copy", "job", "iam")
}


class Machine(RuleBasedStateMachine):
    """The engine's life under kills, faults and a world that moves on."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.world = World(WorldParams())
        self.switch = KillSwitch()
        self.judge = Judge()
        self.store = DurableStore(self.switch, self.judge)
        self.faults = FaultPlan(seed=0)
        self.clouds: dict[str, KillableCloud] = {}
        self.rows: list[Row] = []
        self.dropped: list[Row] = []
        self.failed_on_purpose: set[str] = set()  # item keys whose job the test failed
        self.back_pressure: list[str] = []  # IMG.0060 the tool caused itself
        self.runs = 0
        self.listed_at_end: set[str] = set()  # the list's keys when a run last ended itself
        self.ready = False

    # -- set-up ---------------------------------------------------------------------------------

    @initialize(
        visibility=st.sampled_from(["immediate", "at_end"]),
        lag=st.sampled_from([0.0, 45.0, 200.0]),
        per_account=st.tuples(st.integers(1, 10), st.integers(0, 4)),
        seed=st.integers(0, 2**16),
    )
    def build(self, visibility: str, lag: float, per_account: tuple[int, int], seed: int) -> None:
        # Copies take 2.5-13 min (settle is 15 min: longer than any copy plus its lag).
        self.world = World(
            WorldParams(
                seconds_per_gib=20.0, fixed_seconds=120.0, init_seconds=30.0, noise=0.2,
                visibility=visibility, visibility_lag=lag, seed=seed,
            )
        )  # fmt: skip
        self.faults = FaultPlan(seed=seed)
        self.rng = random.Random(seed)
        for account in ACCOUNTS:
            self.world.add_account(account, f"dom-{account}", f"AK{account}", f"SK{account}")
            inner = InMemoryTenantCloud(self.world, account, self.clock.now, self.faults)
            self.clouds[account] = KillableCloud(inner, self.switch, self)
        for account, count in zip(ACCOUNTS, per_account, strict=True):
            for _ in range(count):
                self.rows.append(self._new_row(account))
        self.ready = True

    def _new_row(self, account: str) -> Row:
        gib = self.rng.choice([1, 2, 5, 10, 20])
        image = self.world.add_image(
            account,
            SOURCE,
            {"name": f"{account}-img-{len(self.world.images.get(SOURCE, {}))}",
             "__image_size": str(gib * GIB)},
        )  # fmt: skip
        return Row(
            line=len(self.rows) + len(self.dropped) + 2,
            tenant=account,
            image_id=str(image["id"]),
            source_region=SOURCE,
            target_region=self.rng.choice(TARGETS),
        )

    # -- runs -----------------------------------------------------------------------------------

    def _run(
        self,
        *,
        kill_ops: int | None = None,
        after_effect: bool = False,
        kill_at: float | None = None,
        retry_failed: bool = False,
        stuck_after: float | None = None,
        store: DurableStore | None = None,
        lock_lost_at: float | None = None,
    ) -> int | None:
        """One run from the durable state (of ``store``, by default the list's own state dir);
        its exit code, or None if it was killed or lost its lock."""
        self.runs += 1
        store = store or self.store
        store.start_run()
        items = merge_list(store.items, self.rows)
        options = RunOptions(retry_failed=retry_failed)
        check_lock = self._lock(lock_lost_at)

        async def kill_later(seconds: float) -> None:
            await self.clock.sleep(seconds)
            self.switch.dead = True
            raise Killed

        async def stuck(seconds: float) -> None:
            await self.clock.sleep(seconds)
            raise AssertionError(f"a run without faults still going after {seconds:.0f} s")

        async def main() -> int:
            ctx = RunContext(  # in the loop: its events belong to it
                config=CONFIG,
                clock=self.clock,
                store=store,
                clouds=self.clouds,
                rng=random.Random(self.runs),
            )
            code = -1
            async with anyio.create_task_group() as group:
                group.start_soon(self.clock.autojump)
                if kill_at is not None:
                    group.start_soon(kill_later, kill_at)
                if stuck_after is not None:
                    group.start_soon(stuck, stuck_after)
                await store_merged(store, items)
                code = (await Engine(ctx, options).run(items)).exit_code
                group.cancel_scope.cancel()
            return code

        self.switch.arm(kill_ops, after_effect)
        store.lock_check = check_lock
        try:
            code = anyio.run(main, backend="asyncio")
            if store is self.store:
                self.listed_at_end = {row.key for row in self.rows}
            return code
        except BaseExceptionGroup as group:
            return self._ended(group)
        except (Killed, LockLost):
            return None
        finally:
            self.switch.arm(None)
            store.lock_check = lambda: None

    def _lock(self, lost_after: float | None) -> Callable[[], None]:
        """The run's lock check: LockLost once ``lost_after`` seconds have passed."""
        lost_at = None if lost_after is None else self.clock.now() + lost_after

        def check_lock() -> None:
            if lost_at is not None and self.clock.now() >= lost_at:
                raise LockLost("lock removed while this run held it")

        return check_lock

    @staticmethod
    def _ended(group: BaseExceptionGroup[BaseException]) -> None:
        """A run ended by a kill or a lost lock: None; anything else is raised again."""
        killed, rest = group.split((Killed, LockLost))
        if killed is None:
            raise group
        # A cloud error a sibling task met while the process died: the handler that would
        # have taken it (one for a group of cloud errors) never saw a clean group.
        if rest is not None and rest.split(CloudError)[1] is not None:
            raise rest from None
        return

    @rule(ops=st.integers(1, 60), after_effect=st.booleans())
    def run_killed_at_an_operation(self, ops: int, after_effect: bool) -> None:
        """kill -9 at the ops-th commit or cloud call, before or after it took effect."""
        self._run(kill_ops=ops, after_effect=after_effect)

    @rule(seconds=st.floats(0.0, 1500.0))
    def run_killed_at_a_time(self, seconds: float) -> None:
        """kill -9 after this much virtual time."""
        self._run(kill_at=seconds)

    @rule(seconds=st.floats(0.0, 1500.0), hours=st.sampled_from([7.0, 60.0]))
    def run_killed_then_off_for_hours(self, seconds: float, hours: float) -> None:
        """kill -9, then the machine stays off past job_deadline (6 h): a weekend, a reboot."""
        self._run(kill_at=seconds)
        self.clock.advance(hours * 3600.0)

    @rule(retry_failed=st.sampled_from([False, False, True]))
    def run_to_its_end(self, retry_failed: bool) -> None:
        self._run(retry_failed=retry_failed)

    # -- a wrong state: the cloud is the truth (design I2) ---------------------------------------

    def _copies_show_at_once(self) -> bool:
        """Whether a copy shows in the target listing as soon as it is made. When it shows only
        later, a state that lost a submission cannot be saved by the listing alone (a known
        limit: the settle window only helps items the state knows may have been submitted)."""
        params = self.world.params
        return params.visibility == "immediate" and params.visibility_lag == 0.0

    @rule(line=st.integers(0, 40), detected=st.booleans())
    def the_journal_is_damaged_at_a_line(self, line: int, detected: bool) -> None:
        """A bad line in the middle stops the next run (exit 74) and ``--repair-state``
        rebuilds the state from the list; a journal cut at a line reads as a torn tail: the
        state goes back to that line."""
        if not self._copies_show_at_once():
            return
        if detected:
            self.store.rebuild()
            self.listed_at_end = set()
        else:
            self.store.cut_journal(line)

    @rule(seconds=st.one_of(st.none(), st.floats(0.0, 1500.0)))
    def the_list_runs_through_a_second_state_dir(self, seconds: float | None) -> None:
        """``run LIST --state-dir other.state`` (killed after ``seconds``, or to its end)."""
        if not self._copies_show_at_once():
            return
        other = DurableStore(self.switch, Judge())
        self._run(store=other, kill_at=seconds)
        assert other.judge.violations == []

    @rule(seconds=st.floats(0.0, 1500.0))
    def the_lock_is_deleted_while_a_run_holds_it(self, seconds: float) -> None:
        """``rm lock`` after ``seconds``: the run stops at its next save or copy request (exit
        75) and the next run, which takes a new lock, goes on from the durable state."""
        self._run(lock_lost_at=seconds)
        self._run()

    # -- faults and a world that moves on -------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def the_next_copy_replies_are_lost(self, count: int) -> None:
        """The copies are made, their answers never arrive."""
        self.faults.enqueue("copy", *[Fault.LOST_REPLY] * count)

    @rule(data=st.data(), kind=st.sampled_from(sorted(FAULTS_BY_KIND)), count=st.integers(1, 3))
    def inject_faults(self, data: st.DataObject, kind: str, count: int) -> None:
        faults = data.draw(st.lists(st.sampled_from(FAULTS_BY_KIND[kind]), min_size=count))
        self.faults.enqueue(kind, *faults[:count])

    @rule(index=st.integers(0, 50), retried=st.booleans())
    def a_copy_job_fails(self, index: int, retried: bool) -> None:
        now = self.clock.now()
        live = [j for j in self.world.jobs.values() if not j.external and j.status(now) in LIVE]
        if not live:
            return
        job = live[index % len(live)]
        self.world.fail_job(job.job_id, now, RETRIED_FAIL if retried else PERMANENT_FAIL)
        self.failed_on_purpose.add(item_key(job.account, job.image_id, job.target_region))

    @rule(account=st.sampled_from(ACCOUNTS), count=st.integers(1, 5), seconds=st.floats(1, 3000))
    def copies_started_outside_hold_slots(self, account: str, count: int, seconds: float) -> None:
        self.world.occupy(account, count, seconds, self.clock.now())

    @rule(seconds=st.sampled_from([60.0, 1800.0, 7 * 3600.0]))  # job_deadline: 6 h
    def time_passes_while_nothing_runs(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(account=st.sampled_from(ACCOUNTS), count=st.integers(1, 6))
    def the_list_gains_rows(self, account: str, count: int) -> None:
        for _ in range(count):
            self.rows.append(self._new_row(account))

    @rule(index=st.integers(0, 50))
    def the_list_loses_a_row(self, index: int) -> None:
        if self.rows:
            self.dropped.append(self.rows.pop(index % len(self.rows)))

    # -- the judge ------------------------------------------------------------------------------

    def judge_back_pressure(self, account: str) -> None:
        """The cloud refused a copy with IMG.0060: only fair if something the tool does not
        hold a slot for is in flight (a copy started outside, or a copy whose item gave up its
        slot, e.g. after its deadline)."""
        now = self.clock.now()
        for job in self.world.jobs.values():
            if job.account != account or job.status(now) not in LIVE:
                continue
            item = self.store.items.get(item_key(account, job.image_id, job.target_region))
            if job.external or item is None or not item.phase.holds_slot:
                return
        self.back_pressure.append(f"{account} at {now:.0f}: IMG.0060 from the tool's own copies")

    @invariant()
    def phases_and_attempts_only_move_forward(self) -> None:
        assert self.judge.violations == []

    @invariant()
    def no_item_is_copied_twice(self) -> None:
        """A second copy of an item only once the first one failed."""
        by_key: dict[str, list[Any]] = {}
        for job in self.world.jobs.values():
            if not job.external:
                key = item_key(job.account, job.image_id, job.target_region)
                by_key.setdefault(key, []).append(job)
        for key, jobs in by_key.items():
            jobs.sort(key=lambda j: j.begin)
            for earlier, later in itertools.pairwise(jobs):
                why = f"{key} copied again at {later.begin:.0f}, its copy of {earlier.begin:.0f}"
                assert earlier.fails, f"{why} did not fail"
                assert earlier.end <= later.begin, f"{why} was still going"

    @invariant()
    def at_most_five_in_flight_per_account(self) -> None:
        assert all(n <= CAP for n in self.world.max_in_flight.values()), self.world.max_in_flight
        assert self.back_pressure == []

    @invariant()
    def every_item_is_terminal_or_resumable(self) -> None:
        needs = {
            Phase.SUBMITTING: "submitted_at",
            Phase.RECONCILING: "unknown_since",
            Phase.RUNNING: "job_id",
            Phase.ADOPTED: "target_image_id",
            Phase.SUCCEEDED: "target_image_id",
        }
        for key, item in self.store.items.items():
            assert item.key == key
            wanted = needs.get(item.phase)
            assert wanted is None or getattr(item, wanted) is not None, (key, item.phase, wanted)
        missing = self.listed_at_end - set(self.store.items)  # a run that ended forgot none
        assert not missing, missing

    # -- the end --------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Faults off: the list runs to completion, and every item ends as it should."""
        if not self.ready:
            return
        for cloud in self.clouds.values():
            cloud.inner.faults = None
        codes = []
        for _ in range(FINAL_RUNS):
            codes.append(self._run(stuck_after=STUCK_AFTER))
            if codes[-1] in (0, 1):
                break
        assert codes[-1] in (0, 1), codes
        self.phases_and_attempts_only_move_forward()
        self.no_item_is_copied_twice()
        self.at_most_five_in_flight_per_account()
        self.every_item_is_terminal_or_resumable()
        now = self.clock.now()
        listed = {row.key for row in self.rows}
        for key in listed:
            item = self.store.items[key]
            if item.phase == Phase.FAILED and key in self.failed_on_purpose:
                continue
            assert item.phase == Phase.SUCCEEDED, (key, item.phase, item.error_code, item.detail)
            target = self.world.image(item.row.target_region, item.target_image_id or "", now)
            assert target is not None, key
            assert target["status"] == "active", (key, target["status"])
            assert item_token(key) in target["__description"], key
        going = [j.job_id for j in self.world.jobs.values() if j.status(now) in LIVE]
        assert all(self.world.jobs[j].external for j in going), going  # none of the tool's


SETTINGS = settings(
    max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "80")),
    stateful_step_count=int(os.environ.get("STATEFUL_STEPS", "20")),
    deadline=None,
    derandomize="STATEFUL_SEED" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    # Shrinking a failure can take minutes: in CI the failing steps are printed as found;
    # STATEFUL_SHRINK=1 shrinks them (reproduce with STATEFUL_SEED or the printed blob).
    phases=[s for s in Stage if s != Stage.shrink or os.environ.get("STATEFUL_SHRINK")],
    print_blob=True,
)
Machine.TestCase.settings = SETTINGS
TestEngineHistories = Machine.TestCase
if "STATEFUL_SEED" in os.environ:
    TestEngineHistories = seed(int(os.environ["STATEFUL_SEED"]))(TestEngineHistories)
