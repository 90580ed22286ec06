"""One progress sample pins a copy's end when its route's copies tell when it began to move:
two polls (a probe, then just after the end), not three, and no later."""

import random
import statistics
from typing import Any, cast

import pytest

from orchestrator.core.cloud import TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.polling import MARGIN, PINNED, PollState, estimate_end, next_delay
from orchestrator.core.speed import EXPLORE, START_MIN, RouteSpeeds, StartDelays
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.simulator.jobs import SUCCESS, SimJob
from tests.engine_harness import Scene
from tests.virtual_clock import VirtualClock

ROUTE = ("a", "b")


def delay(state: PollState, now: float, expected: float | None, jitter: float = 0.5) -> float:
    return next_delay(
        state, now, expected_duration=expected, poll_min=1.0, poll_max=300.0, jitter=jitter
    )


def test_one_sample_pins_the_end_when_the_start_is_told() -> None:
    """Told the copy began to move 10 s after its answer (within 0.1 s), a sample of 40 % at
    50 s pins the end at 110 s: the next poll is aimed just after it. Not told, the same
    sample is only a bound: a second probe comes first."""
    told = PollState(started_at=0.0, moves_from=10.0, moves_within=0.1).observe(50.0, 0.4)
    estimate = estimate_end(told, 100.0)
    assert estimate is not None
    assert estimate.precise
    assert estimate.end_at == pytest.approx(110.0)
    for jitter in (0.0, 0.99):
        assert 110.0 <= 50.0 + delay(told, 50.0, 100.0, jitter) <= 110.0 * (1 + 2 * MARGIN)
    blind = PollState(started_at=0.0).observe(50.0, 0.4)
    assert 50.0 + delay(blind, 50.0, 100.0) < 100.0


def test_a_start_told_too_loosely_does_not_pin() -> None:
    """A start known within 10 s moves the end of a copy sampled at 40 % by 15 s, more than
    PINNED of it: the sample is only a bound (a second probe)."""
    state = PollState(started_at=0.0, moves_from=10.0, moves_within=10.0).observe(50.0, 0.4)
    assert PINNED * 110.0 < 10.0 * 0.6 / 0.4
    estimate = estimate_end(state, 100.0)
    assert estimate is not None
    assert not estimate.precise
    assert state.pinned() is None


def test_a_job_still_at_zero_after_the_told_start_is_not_pinned() -> None:
    """Seen at 0 % after the moment its route's copies begin to move, this copy is not like
    them (a longer INIT): its first moving sample pins nothing."""
    state = PollState(started_at=0.0, moves_from=10.0, moves_within=0.1)
    state = state.observe(20.0, 0.0).observe(50.0, 0.3)
    assert state.pinned() is None
    estimate = estimate_end(state, 100.0)
    assert estimate is not None
    assert not estimate.precise


def test_a_first_probe_that_will_pin_leaves_room_for_one_poll_not_two() -> None:
    """A copy of 8 x poll_min (expected 8 s, 6 s at the earliest): told its start, the first
    probe can come later, one RESERVE before the earliest end (a later sample pins better);
    not told, it keeps room for a second probe."""
    told = PollState(started_at=0.0, moves_from=0.0, moves_within=0.01)
    blind = PollState(started_at=0.0)
    assert delay(told, 0.0, 8.0) == pytest.approx(4.0)  # FIRST_PROBE x 8 s, room enough
    short_told, short_blind = delay(told, 0.0, 5.0), delay(blind, 0.0, 5.0)
    assert short_blind == pytest.approx(5.0 * 0.75 - 2 * 1.25)
    assert short_told == pytest.approx(2.5)  # half-way: room for the one poll after it
    assert short_told > short_blind


def test_start_delays_tell_their_range_once_enough_and_leave_some_copies_to_learn() -> None:
    """The range (low end, width) of the last copies' start delays, once START_MIN are
    known; every EXPLORE-th copy is told nothing (it probes twice, and so keeps learning)."""
    starts = StartDelays()
    for n in range(START_MIN - 1):
        starts.learn(30.0 + n * 0.01)
    assert starts.ask() is None
    starts.learn(30.5)
    told = [starts.ask() for _ in range(4 * EXPLORE)]
    assert told.count(None) == 4
    low, width = next(t for t in told if t is not None)
    assert low == pytest.approx(30.0)
    assert 0.0 < width <= 0.5


def _fleet(
    init: float | tuple[float, float], rng: random.Random, copies: int = 400
) -> tuple[list[int], list[float]]:
    """A route's copies one after the other, each polled with the schedule and told what the
    copies before it teach of their start (as engine/lifecycle.py does), on the simulator's
    job model; (polls, lags as a share of each copy's duration)."""
    speeds = RouteSpeeds()
    polls, lags = [], []
    for _ in range(copies):
        duration = rng.uniform(12.0, 80.0)
        start = init if isinstance(init, float) else rng.uniform(*init)
        job = SimJob("j", "a", "r", begin=0.0, run_start=start, end=start + duration)
        told = speeds.start_delay(ROUTE)
        state = PollState(started_at=0.0)
        if told is not None:
            state = PollState(0.0, moves_from=told[0], moves_within=told[1])
        expected = (start + duration) * rng.uniform(0.8, 1.2)
        now, count = 0.0, 0
        while True:
            now += delay(state, now, expected, rng.random())
            count += 1
            if job.status(now) == SUCCESS:
                break
            state = state.observe(now, job.progress(now))
        began = state.began()  # by the polls before the one that saw it ended
        if began is not None:
            speeds.learn_start(ROUTE, began)
        polls.append(count)
        lags.append((now - job.end) / (job.end - job.begin))
    return polls, lags


@pytest.mark.parametrize("init", [0.0, 4.0], ids=["no-init", "init-4"])
def test_a_route_whose_copies_start_alike_is_polled_twice_a_copy(init: float) -> None:
    """Copies that begin to move at the same moment after their answer (at once, or after an
    INIT of 4 x poll_min): once the route has learned it, a copy takes about two polls (a
    probe, then just after the end), and is seen ending as soon as with three."""
    polls, lags = _fleet(init, random.Random(5))
    later = polls[100:]
    assert statistics.fmean(later) <= 2.3
    assert statistics.fmean(lags) <= 0.01
    assert sorted(lags)[int(0.95 * len(lags))] <= 0.02
    assert min(lags) >= 0.0


def test_a_route_whose_copies_start_unlike_keeps_probing_twice() -> None:
    """Copies at 0 % for anything from 0 to 20 s (up to 1.7 x the shortest): the start tells
    too little to pin an end; they are probed twice as before, and seen ending as soon."""
    polls, lags = _fleet((0.0, 20.0), random.Random(6))
    assert statistics.fmean(polls[100:]) >= 2.8
    assert statistics.fmean(lags) <= 0.01
    assert min(lags) >= 0.0


class SeenEnded:
    """A tenant's cloud that counts each job's answered polls and notes when one first
    showed it ended."""

    def __init__(self, inner: TenantCloud, clock: VirtualClock) -> None:
        self.inner, self.clock = inner, clock
        self.polls: dict[str, int] = {}
        self.ended: dict[str, float] = {}

    async def get_job(self, *args: Any, **kwargs: Any) -> Any:
        job = await self.inner.get_job(*args, **kwargs)
        self.polls[job.job_id] = self.polls.get(job.job_id, 0) + 1
        if job.status == SUCCESS:
            self.ended.setdefault(job.job_id, self.clock.now())
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_engine_learns_a_routes_start_and_polls_its_copies_twice() -> None:
    """60 copies on one route, each at 0 % for its first 30 s (the cloud's INIT): once the
    route's copies have told when they begin to move after their answer, a copy is polled
    about twice (three times before), and every copy is still seen ending within 2 % of its
    duration (the simulator's job ends, not the tool's record)."""
    scene = Scene()
    scene.account("acme")
    for number in range(60):
        scene.row("acme", 1.0 + number % 13)
    seen: list[SeenEnded] = []

    def wrap(cloud: InMemoryTenantCloud) -> TenantCloud:
        seen.append(SeenEnded(cloud, scene.clock))
        return cast(TenantCloud, seen[0])

    result = await scene.run(wrap=wrap)
    assert result.exit_code == ExitCode.OK
    truth = scene.truth()
    copies = sorted(truth.copies, key=lambda copy: copy.begin)
    assert len(copies) == 60
    assert not truth.duplicates
    polls = [seen[0].polls[copy.job_id] for copy in copies]
    assert statistics.fmean(polls[:START_MIN]) >= 2.9  # nothing learned yet: probed twice
    assert statistics.fmean(polls[20:]) <= 2.3
    for copy in copies:
        lag = seen[0].ended[copy.job_id] - copy.end
        assert 0.0 <= lag <= 0.02 * (copy.end - copy.begin)
