"""Back-off strategies as values: computed synchronously, the same numbers the engine used."""

from __future__ import annotations

import math
import random

import pytest

from orchestrator.core.backoff import (
    ExponentialBackoff,
    back_pressure_backoff,
    look_backoff,
    retry_backoff,
)


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    """base x 2^n, never above the cap."""
    backoff = ExponentialBackoff(base=10.0, cap=100.0)
    assert [backoff.ceiling(n) for n in range(6)] == [10.0, 20.0, 40.0, 80.0, 100.0, 100.0]


def test_the_exponent_stops_at_max_exponent() -> None:
    """Past max_exponent the wait stops growing, however many attempts (no float overflow)."""
    backoff = ExponentialBackoff(base=1.0, max_exponent=3)
    assert backoff.ceiling(3) == backoff.ceiling(5000) == 8.0


def test_without_jitter_the_delay_is_the_ceiling() -> None:
    """No jitter: the delay is exactly the ceiling, and no random number is needed."""
    backoff = look_backoff(poll_min=5.0, poll_max=300.0)
    assert [backoff.delay(n) for n in (0, 1, 2, 10)] == [5.0, 10.0, 20.0, 300.0]


def test_full_jitter_stays_between_the_base_and_the_ceiling() -> None:
    """Full jitter draws in [0, ceiling] and never waits less than the base."""
    backoff = retry_backoff(poll_min=10.0, backoff_max=600.0)
    rng = random.Random(7)
    for attempt in range(30):
        for _ in range(20):
            assert 10.0 <= backoff.delay(attempt, rng) <= backoff.ceiling(attempt)


def test_full_jitter_needs_a_random_number_generator() -> None:
    """A jittered strategy asked without an rng is a bug, said at once."""
    with pytest.raises(ValueError, match="random number generator"):
        back_pressure_backoff(1.0, 60.0).delay(1)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 19, 20, 21, 40])
def test_retry_backoff_is_the_engine_formula(attempt: int) -> None:
    """The same draw as lifecycle's old min(max, min * 2^min(n, 20)) with full jitter."""
    poll_min, backoff_max = 10.0, 600.0
    old_rng, new_rng = random.Random(attempt), random.Random(attempt)
    ceiling = min(backoff_max, poll_min * 2.0 ** min(attempt, 20))
    old = max(poll_min, old_rng.uniform(0.0, ceiling))
    assert retry_backoff(poll_min, backoff_max).delay(attempt, new_rng) == old


@pytest.mark.parametrize("streak", [1, 2, 3, 8, 30])
def test_back_pressure_backoff_is_the_window_formula(streak: int) -> None:
    """The same draw as the window's old min(max, min * 2^streak) with full jitter."""
    low, high = 2.0, 900.0
    old_rng, new_rng = random.Random(streak), random.Random(streak)
    old = max(low, old_rng.uniform(0.0, min(high, low * 2.0**streak)))
    assert back_pressure_backoff(low, high).delay(streak, new_rng) == old


def test_an_uncapped_strategy_grows_without_bound() -> None:
    """cap defaults to infinity: only max_exponent bounds the wait."""
    assert ExponentialBackoff(base=1.0).cap == math.inf
    assert ExponentialBackoff(base=1.0).ceiling(40) == 2.0**40


def test_back_pressure_after_thousands_of_refusals_waits_the_cap() -> None:
    """A tenant refused IMG.0060 for days still gets a finite wait, never an OverflowError."""
    strategy = back_pressure_backoff(2.0, 900.0)
    assert strategy.ceiling(5000) == 900.0
    assert 2.0 <= strategy.delay(5000, random.Random(1)) <= 900.0
