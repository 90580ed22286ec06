"""When to poll a job next: a pure schedule, aware of progress and of the image's size.

A copy is polled about three times when something is known about it:

1. a *probe* half-way to the expected end (``expected_duration``: the speed of the copies
   already finished, applied to this image's size) reads the job's ``process_percent``;
2. a second probe, most of the way to the end that first sample suggests, reads it again;
3. the two samples give the job's own rate, hence its end: the next poll is aimed just *after*
   it (by ``MARGIN`` of the copy's duration), so the end is seen at once and never missed by
   much.

A job adopted after a restart that should have ended by now is polled at once. A poll that
finds the job still running past its estimated end is followed by more looks, after a share of
the time elapsed, doubling with each poll that sees no progress. With nothing to go on (no
finished copy yet, no progress, or a job stuck in ``INIT``), polls back off exponentially from
``poll_min``. Probes and back-off are jittered (±``JITTER``) so that many jobs started
together do not poll together; the poll aimed at the end is only ever jittered later, never
earlier. Every interval is clamped to ``[poll_min, poll_max]``.

``process_percent`` is a fraction (0..1) in the API; a value above 1 is read as a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from orchestrator.core.backoff import ExponentialBackoff


class Polling(StrEnum):
    """``[scheduling] polling``: how jobs are polled."""

    ADAPTIVE = "adaptive"  # aimed at each job's estimated end (the good strategy)
    FIXED = "fixed"  # every ``poll_min`` seconds, nothing learned (to measure against)


FIRST_PROBE = 0.5  # with only an expected duration: probe at this share of the time left
SECOND_PROBE = 0.8  # with one progress sample: probe at this share of the time it suggests
MARGIN = 0.004  # aim this share of the copy's duration after its estimated end
OVERDUE_SHARE = 0.01  # past the estimated end: look again after this share of the time so far
MIN_SPAN = 0.05  # progress between two samples needed to trust the rate they give
JITTER = 0.1  # +-10 % on probes and back-off


def as_fraction(progress: float | None) -> float | None:
    """``process_percent`` as a fraction in [0, 1]; above 1 it is read as a percentage."""
    if progress is None:
        return None
    if progress > 1.0:
        progress /= 100.0
    return min(1.0, max(0.0, progress))


@dataclass(frozen=True)
class PollState:
    """What the polls of one job have seen so far (times on the run's clock)."""

    started_at: float  # when the copy was submitted (or adopted)
    last_at: float | None = None
    last_progress: float | None = None
    moving_since: float | None = None  # first poll that saw progress > 0
    moving_progress: float | None = None
    quiet_polls: int = 0  # polls in a row that taught nothing new
    polls: int = 0

    def observe(self, now: float, progress: float | None) -> PollState:
        """The state after a poll at ``now`` that showed ``progress`` (or None: no answer)."""
        fraction = as_fraction(progress)
        moved = fraction is not None and fraction > (self.last_progress or 0.0)
        state = replace(
            self,
            last_at=now,
            last_progress=fraction if fraction is not None else self.last_progress,
            quiet_polls=0 if moved else self.quiet_polls + 1,
            polls=self.polls + 1,
        )
        if moved and self.moving_since is None:
            state = replace(state, moving_since=now, moving_progress=fraction)
        return state

    def rate(self) -> float | None:
        """Progress per second between the first and the last sample, if they are far enough
        apart to be trusted."""
        if (
            self.moving_since is None
            or self.moving_progress is None
            or self.last_at is None
            or self.last_progress is None
            or self.last_at <= self.moving_since
            or self.last_progress - self.moving_progress < MIN_SPAN
        ):
            return None
        return (self.last_progress - self.moving_progress) / (self.last_at - self.moving_since)


@dataclass(frozen=True)
class Estimate:
    """When the job should end, and whether the job's own rate says so (``precise``)."""

    end_at: float
    precise: bool


def estimate_end(state: PollState, expected_duration: float | None) -> Estimate | None:
    """The job's expected end, or None when nothing is known."""
    rate = state.rate()
    if rate is not None and state.last_at is not None and state.last_progress is not None:
        return Estimate(state.last_at + (1.0 - state.last_progress) / rate, precise=True)
    if state.moving_since is not None and state.last_progress and state.last_at is not None:
        # One sample: the rate since submission. It counts the INIT phase as copying time, so
        # it errs late; the next probe lands well before it to read a second sample.
        elapsed = state.last_at - state.started_at
        if elapsed > 0:
            end = state.started_at + elapsed / state.last_progress
            if expected_duration is not None:
                end = min(end, state.started_at + 1.5 * expected_duration)
            return Estimate(end, precise=False)
    if expected_duration is not None:
        return Estimate(state.started_at + expected_duration, precise=False)
    return None


def remaining_time(state: PollState, now: float, expected_duration: float | None) -> float | None:
    """Estimated seconds until the job ends (negative when overdue), or None."""
    estimate = estimate_end(state, expected_duration)
    return None if estimate is None else estimate.end_at - now


def next_delay(
    state: PollState,
    now: float,
    *,
    expected_duration: float | None,
    poll_min: float,
    poll_max: float,
    jitter: float = 0.5,
    adaptive: bool = True,
) -> float:
    """Seconds to wait before the next poll. ``jitter`` is a uniform random number in [0, 1).

    ``adaptive=False`` is the naive strategy (a fixed ``poll_min`` interval, nothing learned),
    kept to measure the adaptive one against.
    """
    if not adaptive:
        return poll_min
    spread = 1.0 + JITTER * (2.0 * jitter - 1.0)
    estimate = estimate_end(state, expected_duration)
    if estimate is None:
        delay = ExponentialBackoff(poll_min, max_exponent=16).ceiling(state.quiet_polls) * spread
    else:
        left = estimate.end_at - now
        duration = max(0.0, estimate.end_at - state.started_at)
        if left <= 0 and state.polls == 0:
            delay = poll_min * spread  # adopted after a restart, past its end: look at once
        elif left <= 0:
            # Overdue: look again soon, then less and less often while nothing moves.
            overdue = max(poll_min, OVERDUE_SHARE * (now - state.started_at))
            again = ExponentialBackoff(overdue, max_exponent=16)
            delay = again.ceiling(max(state.quiet_polls - 1, 0)) * spread
        elif estimate.precise:
            delay = left + MARGIN * duration * (1.0 + jitter)
        elif state.moving_since is not None:
            delay = left * SECOND_PROBE * spread
        else:
            delay = left * FIRST_PROBE * spread
    return min(poll_max, max(poll_min, delay))
