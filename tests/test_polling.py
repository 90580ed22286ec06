"""The poll schedule: near the expected end, backing off without a signal, always clamped."""

import math
import random
import statistics
from dataclasses import FrozenInstanceError

import pytest

from orchestrator.core.polling import (
    FIRST_PROBE,
    GROWTH,
    JITTER,
    MARGIN,
    RESERVE,
    PollState,
    as_fraction,
    estimate_end,
    next_delay,
    remaining_time,
)
from orchestrator.core.speed import WINDOW, RouteSpeeds, SpeedModel
from orchestrator.core.units import GIB
from orchestrator.simulator.jobs import SUCCESS, SimJob


def delay(
    state: PollState,
    now: float,
    expected: float | None = None,
    *,
    poll_min: float = 10.0,
    poll_max: float = 300.0,
    jitter: float = 0.5,
    adaptive: bool = True,
) -> float:
    return next_delay(
        state,
        now,
        expected_duration=expected,
        poll_min=poll_min,
        poll_max=poll_max,
        jitter=jitter,
        adaptive=adaptive,
    )


def test_process_percent_above_one_is_a_percentage() -> None:
    """0.42 and 42 both mean 42 % done; out-of-range values are clamped."""
    assert as_fraction(0.42) == 0.42
    assert as_fraction(42.0) == pytest.approx(0.42)
    assert as_fraction(-1.0) == 0.0
    assert as_fraction(None) is None


def test_an_observed_state_is_a_poll_state_like_one_made_whole() -> None:
    """What a poll leaves (made without PollState's ``__init__``) is the same frozen value
    as the one its constructor makes from the same fields."""
    state = PollState(started_at=1.0).observe(2.0, 0.0).observe(3.0, 0.25).observe(4.0, 0.25)
    assert type(state) is PollState
    assert state == PollState(1.0, 4.0, 0.25, 2.0, 3.0, 0.25, 1, 3)
    assert hash(state) == hash(PollState(1.0, 4.0, 0.25, 2.0, 3.0, 0.25, 1, 3))
    with pytest.raises(FrozenInstanceError):
        state.polls = 0  # type: ignore[misc]


def test_progress_rate_predicts_the_end() -> None:
    """Two progress samples give the rate; the time left follows from it."""
    state = PollState(started_at=0.0).observe(10.0, 0.1).observe(20.0, 0.2)
    assert remaining_time(state, 20.0, None) == pytest.approx(80.0)
    estimate = estimate_end(state, None)
    assert estimate is not None
    assert estimate.precise


def test_samples_too_close_do_not_count_as_a_rate() -> None:
    """Progress that moved less than MIN_SPAN between two samples is not trusted as a rate."""
    state = PollState(started_at=0.0).observe(10.0, 0.10).observe(11.0, 0.11)
    estimate = estimate_end(state, None)
    assert estimate is not None
    assert not estimate.precise


def test_first_poll_without_knowledge_is_the_minimum() -> None:
    """Nothing known yet: poll after poll_min."""
    assert delay(PollState(started_at=0.0), 0.0) == 10.0


def test_backoff_grows_without_signal_and_is_capped() -> None:
    """Polls that teach nothing double the interval, but never wait more than GROWTH of the
    time since the submission (a copy is seen ending within that share of its duration),
    and never more than poll_max."""
    state, now, delays = PollState(started_at=0.0), 0.0, []
    for _ in range(40):
        wait = delay(state, now, poll_min=1.0, poll_max=30.0)
        assert wait <= max(1.0, GROWTH * now) * (1 + JITTER)
        delays.append(wait)
        now += wait
        state = state.observe(now, None)
    assert delays == sorted(delays)
    assert delays[:2] == [1.0, 1.0]
    assert delays[-1] == 30.0


def test_zero_progress_past_the_expected_end_is_not_yet_moving() -> None:
    """A job still at 0 % (INIT) long past its expected end is not "infinitely slow": it is
    looked at again at most GROWTH of the time elapsed later, however many polls saw 0 %."""
    state = PollState(started_at=0.0)
    for at in (500.0, 750.0, 900.0, 1000.0, 1100.0, 1300.0, 1600.0, 2000.0):
        state = state.observe(at, 0.0)
    wait = delay(state, 2000.0, expected=1000.0, poll_max=3600.0)
    assert 10.0 <= wait <= GROWTH * 2000.0 * (1 + JITTER)


def test_first_probe_is_half_way_to_the_expected_end() -> None:
    """With only an expected duration, the first poll reads progress half-way there."""
    assert delay(PollState(started_at=0.0), 0.0, expected=500.0) == FIRST_PROBE * 500.0


def test_second_probe_lands_before_the_end_one_sample_suggests() -> None:
    """One sample (40 % after 400 s): the next poll comes before the 1000 s it suggests."""
    state = PollState(started_at=0.0).observe(400.0, 0.4)
    wait = delay(state, 400.0, expected=1000.0)
    assert 400.0 < 400.0 + wait < 1000.0


def test_with_a_rate_the_poll_lands_just_after_the_end() -> None:
    """Two samples: the next poll is aimed at the end plus a small margin, never before it."""
    state = PollState(started_at=0.0).observe(300.0, 0.3).observe(800.0, 0.8)
    for jitter in (0.0, 0.5, 0.99):
        at = 800.0 + delay(state, 800.0, expected=1000.0, jitter=jitter)
        assert 1000.0 <= at <= 1000.0 * (1 + 2 * MARGIN)


def test_overdue_job_is_looked_at_again_soon_then_less_often() -> None:
    """Past its expected end with no progress (still INIT), a job is polled again soon, then
    less and less often."""
    state = PollState(started_at=0.0).observe(1010.0, 0.0)
    first = delay(state, 1010.0, expected=1000.0)
    state = state.observe(1010.0 + first, 0.0)
    second = delay(state, 1010.0 + first, expected=1000.0)
    assert 10.0 <= first <= 2 * 10.0
    assert first < second <= GROWTH * (1010.0 + first) * (1 + JITTER)


def test_an_adopted_job_past_its_expected_end_is_polled_at_once() -> None:
    """After a restart, a job that should have ended by now gets its first poll at once."""
    state = PollState(started_at=0.0)
    assert delay(state, 5000.0, expected=1000.0) == pytest.approx(10.0)


def test_a_stalled_job_is_polled_less_often() -> None:
    """Progress that stops moving slows the estimated rate: the polls spread out."""
    state = PollState(started_at=0.0).observe(300.0, 0.3).observe(800.0, 0.8)
    state = state.observe(1010.0, 0.8)
    first = delay(state, 1010.0, expected=1000.0)
    state = state.observe(1010.0 + first, 0.8)
    second = delay(state, 1010.0 + first, expected=1000.0)
    assert 10.0 <= first < second <= 300.0


def test_probes_are_jittered_by_at_most_ten_percent() -> None:
    """Jitter spreads probes by at most 10 % either way."""
    state = PollState(started_at=0.0)
    low = delay(state, 0.0, expected=500.0, jitter=0.0)
    high = delay(state, 0.0, expected=500.0, jitter=0.999)
    assert low == pytest.approx(225.0)
    assert high == pytest.approx(275.0, rel=1e-3)


def test_every_delay_is_clamped() -> None:
    """No wait is shorter than poll_min nor longer than poll_max."""
    state = PollState(started_at=0.0).observe(1.0, 0.5).observe(2.0, 0.99)
    assert delay(state, 2.0, poll_min=5.0) == 5.0
    assert delay(PollState(started_at=0.0), 0.0, expected=1e6) == 300.0


def test_fixed_polling_ignores_everything() -> None:
    """The naive strategy (adaptive=False) polls every poll_min, whatever is known."""
    state = PollState(started_at=0.0).observe(300.0, 0.3).observe(800.0, 0.8)
    assert delay(state, 800.0, expected=1000.0, adaptive=False) == 10.0


def _drive(
    job: SimJob, expected: float | None, rng: random.Random, poll_min: float = 10.0
) -> tuple[int, float]:
    """Poll a simulated job with the schedule; (polls, lag as a share of its duration)."""
    state, now, polls = PollState(started_at=job.begin), job.begin, 0
    while True:
        now += delay(state, now, expected, poll_min=poll_min, jitter=rng.random())
        polls += 1
        if job.status(now) == SUCCESS:
            return polls, (now - job.end) / (job.end - job.begin)
        state = state.observe(now, job.progress(now))


@pytest.mark.parametrize("known", [True, False], ids=["speed-known", "nothing-known"])
def test_a_mixed_fleet_is_polled_little_and_seen_ending_soon(known: bool) -> None:
    """On the simulator's job model (INIT, linear progress rounded to 0.1 %, capped at 99 %),
    copies of 1-300 GiB need few polls and are seen ending within a small share of their time.
    (With nothing known, a poll or so more: the blind back-off is held to GROWTH of the time
    elapsed, so that a short copy is not missed by a long wait.)"""
    rng = random.Random(4)
    polls, lags = [], []
    for _ in range(500):
        gib = min(300.0, max(1.0, rng.lognormvariate(math.log(40), 1.0)))
        run = (240 + 12 * gib) * rng.uniform(0.8, 1.2)
        job = SimJob("j", "a", "r", begin=0.0, run_start=20.0, end=20.0 + run)
        count, lag = _drive(job, 260 + 12 * gib if known else None, rng)
        polls.append(count)
        lags.append(lag)
    assert statistics.fmean(polls) <= (5 if known else 8)
    assert statistics.fmean(lags) <= 0.015
    assert min(lags) >= 0.0


def test_a_probe_leaves_room_for_the_polls_after_it() -> None:
    """A copy of 12 x poll_min, 0 % for its first third: once a probe has seen it moving, the
    next one still lands a poll_min or more before the expected end, so that the poll aimed
    at the end is not pushed poll_min past it."""
    state = PollState(started_at=0.0).observe(60.0, 0.25)  # INIT 40 s, then 80 s of copy
    at = 60.0 + delay(state, 60.0, expected=120.0)
    assert at <= 120.0 - RESERVE * 10.0
    state = state.observe(at, (at - 40.0) / 80.0)
    end = at + delay(state, at, expected=120.0)
    assert 120.0 <= end <= 120.0 * (1 + 2 * MARGIN)


@pytest.mark.parametrize("known", [True, False], ids=["speed-known", "nothing-known"])
@pytest.mark.parametrize("init", [0.0, 4.0, 0.3, 0.6], ids=["no-init", "init-4", "30%", "60%"])
def test_short_copies_at_zero_at_first_are_seen_ending_soon(known: bool, init: float) -> None:
    """Copies only 12-80 x poll_min long, at 0 % for a while first (4 x poll_min, or a third
    or more of the copy): each is seen ending within 2 % of its duration (1 % on average),
    with few polls when the speed is known (the expectation off by up to 20 %)."""
    rng = random.Random(11)
    polls, lags = [], []
    for _ in range(400):
        duration = rng.uniform(12.0, 80.0)
        start = init if init >= 1.0 else init * duration
        job = SimJob("j", "a", "r", begin=0.0, run_start=start, end=duration)
        expected = duration * rng.uniform(0.8, 1.2) if known else None
        count, lag = _drive(job, expected, rng, poll_min=1.0)
        polls.append(count)
        lags.append(lag)
    assert statistics.fmean(lags) <= 0.01
    assert sorted(lags)[int(0.95 * len(lags))] <= 0.02
    assert min(lags) >= 0.0
    assert statistics.fmean(polls) <= (5 if known else 16)


def test_speed_model_fits_fixed_part_and_rate() -> None:
    """Durations of finished copies give the fixed part and seconds per GiB."""
    model = SpeedModel()
    for gib in (1, 10, 100):
        model.learn(gib * GIB, 30 + 2 * gib)
    fitted = model.fit()
    assert fitted is not None
    fixed, per_gib = fitted
    assert fixed == pytest.approx(30)
    assert per_gib == pytest.approx(2)
    assert model.expected(50 * GIB) == pytest.approx(130)


def test_speed_model_needs_three_copies() -> None:
    """Before three copies have finished there is no expectation."""
    model = SpeedModel()
    model.learn(GIB, 10.0)
    model.learn(2 * GIB, 12.0)
    assert model.expected(GIB) is None


def test_speed_model_forgets_old_copies() -> None:
    """Only the last WINDOW copies count: conditions change (running sums stay exact)."""
    model = SpeedModel()
    for n in range(WINDOW):
        model.learn((1 + n % 9) * GIB, 1000.0 + 50 * (n % 9))
    for n in range(WINDOW):
        model.learn((1 + n % 9) * GIB, 10.0 + 2 * (n % 9))
    assert len(model.samples) == WINDOW
    assert model.expected(5 * GIB) == pytest.approx(10.0 + 2 * 5 - 2, rel=1e-6)
    fresh = SpeedModel(samples=list(model.samples))
    assert fresh.fit() == pytest.approx(model.fit())


def test_speed_model_fit_follows_every_copy_learned() -> None:
    """The fit is kept between copies (asked at every poll), never past one: asked after each
    copy learned, it is the fit of a model made from the same samples at once."""
    model = SpeedModel()
    for n in range(WINDOW + 20):  # past WINDOW: the oldest copy leaves as each one comes
        model.learn((1 + n % 5) * GIB, 10.0 + n + 3 * (n % 5))
        asked = model.expected(3 * GIB)
        fresh = SpeedModel(samples=list(model.samples))
        assert model.fit() == fresh.fit()
        assert asked == fresh.expected(3 * GIB)


def test_each_route_learns_its_own_speed() -> None:
    """Copies between two regions move at that link's pace: a route with three finished
    copies is expected at its own speed; one with fewer borrows the fit of all copies."""
    speeds = RouteSpeeds()
    fast, slow, new = ("a", "b"), ("a", "c"), ("b", "c")
    for gib in (1, 2, 4):
        speeds.learn(fast, gib * GIB, 10.0 * gib)
        speeds.learn(slow, gib * GIB, 40.0 * gib)
    assert speeds.expected(fast, 3 * GIB) == pytest.approx(30.0)
    assert speeds.expected(slow, 3 * GIB) == pytest.approx(120.0)
    assert speeds.expected(new, 3 * GIB) == speeds.overall.expected(3 * GIB)
    assert len(speeds.overall.samples) == 6
