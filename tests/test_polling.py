"""The poll schedule: near the expected end, backing off without a signal, always clamped."""

from orchestrator.polling import PollState, next_delay, remaining_time
from orchestrator.speed import SpeedModel


def test_progress_rate_predicts_the_end() -> None:
    """Two progress samples give the rate; the time left follows from it."""
    state = PollState(started_at=0.0).observe(10.0, 0.1).observe(20.0, 0.2)
    assert remaining_time(state, 20.0, None) == 80.0


def test_first_poll_without_knowledge_is_the_minimum() -> None:
    """Nothing known yet: poll after poll_min."""
    state = PollState(started_at=0.0)
    assert next_delay(state, 0.0, expected_duration=None, poll_min=5, poll_max=60, jitter=0.5) == 5


def test_backoff_grows_without_signal_and_is_capped() -> None:
    """Quiet polls double the interval up to poll_max."""
    state = PollState(started_at=0.0)
    delays = []
    for n in range(8):
        state = state.observe(float(n), None)
        delays.append(
            next_delay(state, float(n), expected_duration=None, poll_min=1, poll_max=30, jitter=0.5)
        )
    assert delays == sorted(delays)
    assert delays[-1] == 30


def test_aims_before_the_expected_end() -> None:
    """With an expected duration, the next poll lands shortly before the expected end."""
    state = PollState(started_at=0.0)
    delay = next_delay(state, 0.0, expected_duration=100.0, poll_min=1, poll_max=1000, jitter=0.5)
    assert 80 <= delay < 100


def test_jitter_stays_within_ten_percent() -> None:
    """Jitter spreads polls by at most 10 %."""
    state = PollState(started_at=0.0)
    low = next_delay(state, 0.0, expected_duration=None, poll_min=10, poll_max=100, jitter=0.0)
    high = next_delay(
        state.observe(1, None), 1.0, expected_duration=None, poll_min=10, poll_max=100, jitter=0.99
    )
    assert low == 10
    assert 20 < high <= 22


def test_speed_model_fits_fixed_part_and_rate() -> None:
    """Durations of finished copies give the fixed part and seconds per GiB."""
    model = SpeedModel()
    for gib in (1, 10, 100):
        model.learn(gib * 2**30, 30 + 2 * gib)
    fitted = model.fit()
    assert fitted is not None
    fixed, per_gib = fitted
    assert abs(fixed - 30) < 1e-6
    assert abs(per_gib - 2) < 1e-6
    assert model.expected(50 * 2**30) == 130
