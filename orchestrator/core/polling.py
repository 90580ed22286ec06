"""When to poll a job next: a pure schedule, aware of progress and of the image's size.

A copy is polled about three times when something is known about it:

1. a *probe* half-way to the expected end (``expected_duration``: the speed of the copies
   already finished on the same route, applied to this image's size) reads the job's
   ``process_percent``;
2. a second probe, most of the way to the end that first sample suggests, reads it again;
3. the two samples give the job's own rate, hence its end: the next poll is aimed just *after*
   it (by ``MARGIN`` of the copy's duration), so the end is seen at once and never missed by
   much.

One sample cannot tell a job's rate from a late start (an ``INIT`` phase at 0 %, a queue in
the cloud): that is what the second probe is for. When the route's recent copies agree on when
a copy begins to move after its copy request is answered (core/speed.py ``StartDelays``: the
copy is told ``moves_from``, the earliest, and ``moves_within``), the first sample that shows
progress pins the end (read from the earliest start, the latest end it allows) closely enough
(``PINNED`` of the copy's duration), and the poll after it is aimed just after that end: two
polls, not three. The first probe then keeps room for one poll after it, not two; a copy still
at 0 % after the told start, or sampled too early to pin its end, is probed again as above.

No poll comes sooner than ``poll_min`` after the last, so a probe leaves room before the end
for the polls after it (``RESERVE`` x ``poll_min`` each): a copy only a few ``poll_min`` long
is still probed early enough for the last poll to land just after its end, not ``poll_min``
late.

A job at 0 % (``INIT``, or a copy that has not started to move) says nothing about its speed:
it is *not yet moving*, never "infinitely slow". The first sample that shows progress gives a
bound on the end (the copy moved at least that much since the last poll at 0 %); the expected
duration, when known, is kept within it.

With nothing to go on (no finished copy yet and no progress), polls back off exponentially
from ``poll_min`` but never wait more than ``GROWTH`` of the time elapsed since the submission,
so a copy is seen ending within a bounded share of its duration. A job adopted after a restart
that should have ended by now is polled at once. A poll that finds the job still running past
its estimated end is followed by more looks, after a share of the time elapsed, doubling with
each poll that sees no progress (again at most ``GROWTH`` of the time elapsed). Probes and
back-off are jittered (±``JITTER``) so that many jobs started together do not poll together;
the poll aimed at the end is only ever jittered later, never earlier. Every interval is
clamped to ``[poll_min, poll_max]``.

``process_percent`` is a fraction (0..1) in the API; a value above 1 is read as a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator.core.backoff import doubled
from orchestrator.core.frozen import replacer


class Polling(StrEnum):
    """``[scheduling] polling``: how jobs are polled."""

    ADAPTIVE = "adaptive"  # aimed at each job's estimated end (the good strategy)
    FIXED = "fixed"  # every ``poll_min`` seconds, nothing learned (to measure against)


FIRST_PROBE = 0.5  # with only an expected duration: probe at this share of the time left
SECOND_PROBE = 0.8  # with one progress sample: probe at this share of the time it suggests
RESERVE = 1.25  # poll_min intervals a probe keeps free before the end, per poll still to come
MARGIN = 0.004  # aim this share of the copy's duration after its estimated end
OVERDUE_SHARE = 0.01  # past the estimated end: look again after this share of the time so far
GROWTH = 0.25  # no back-off waits longer than this share of the time since the submission
PINNED = 0.015  # one sample pins the end when the start's spread moves it less than this share
MIN_SPAN = 0.05  # progress between two samples needed to trust the rate they give
ROUNDING = 0.001  # process_percent may be rounded to 0.1 %
JITTER = 0.1  # +-10 % on probes and back-off
SPREAD = 0.25  # a copy may end this share of its expected duration sooner than expected
BACKOFF_EXPONENT = 16  # back-off doubles at most this many times (then GROWTH caps it anyway)


def as_fraction(progress: float | None) -> float | None:
    """``process_percent`` as a fraction in [0, 1]; above 1 it is read as a percentage."""
    if progress is None:
        return None
    if progress > 1.0:
        progress /= 100.0
    return min(1.0, max(0.0, progress))


@dataclass(frozen=True, slots=True)
class PollState:
    """What the polls of one job have seen so far (times on the run's clock)."""

    started_at: float  # when the copy was submitted (or adopted)
    last_at: float | None = None
    last_progress: float | None = None
    still_at: float | None = None  # the last poll that saw 0 %, before any progress
    moving_since: float | None = None  # first poll that saw progress > 0
    moving_progress: float | None = None
    quiet_polls: int = 0  # polls in a row that taught nothing new
    polls: int = 0
    # The earliest it began to move as the route's copies tell (core/speed.py StartDelays),
    # and how much later it may have (None: they tell nothing, or it is not asked).
    moves_from: float | None = None
    moves_within: float = 0.0

    def observe(self, now: float, progress: float | None) -> PollState:
        """The state after a poll at ``now`` that showed ``progress`` (or None: no answer)."""
        fraction = as_fraction(progress)
        last = self.last_progress
        moved = fraction is not None and fraction > (last or 0.0)
        still_at, moving_since, moving_progress = (
            self.still_at,
            self.moving_since,
            self.moving_progress,
        )
        if moved and moving_since is None:
            moving_since, moving_progress = now, fraction
        elif fraction == 0.0 and moving_since is None:
            still_at = now
        return _replace_state(
            self,
            last_at=now,
            last_progress=fraction if fraction is not None else last,
            still_at=still_at,
            moving_since=moving_since,
            moving_progress=moving_progress,
            quiet_polls=0 if moved else self.quiet_polls + 1,
            polls=self.polls + 1,
        )

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

    def began(self) -> float | None:
        """When the job began to move, by its own rate (None without a trusted one)."""
        rate = self.rate()
        if rate is None or self.moving_since is None or self.moving_progress is None:
            return None
        return self.moving_since - self.moving_progress / rate

    def pinned(self) -> float | None:
        """The end one sample gives when the route's copies tell when this one began to move
        (``moves_from``, within ``moves_within``) closely enough to pin it: within ``PINNED``
        of the copy's duration. Read from the earliest start, it is the latest end those allow.
        None otherwise: with no such start, a job still at 0 % after it (not like the route's
        copies), or one sample too early in the copy to pin its end."""
        start, done, now = _told_start(self), self.last_progress, self.last_at
        if start is None or not done or now is None or self.moving_since is None:
            return None
        if now <= start:
            return None
        end = start + (now - start) / done
        return end if _pins(self, done, end) else None

    def bounds(self) -> tuple[float | None, float] | None:
        """For a job seen moving without a trusted rate: the earliest (None: any moment) and
        the latest it can end at the pace its samples allow, reading each sample as rounded
        by up to ``ROUNDING``; None before any progress."""
        if self.moving_since is None or not self.last_progress or self.last_at is None:
            return None
        now, done = self.last_at, self.last_progress
        since = self.still_at if self.still_at is not None else self.started_at
        # It moved at least ``done`` since the last look at 0 % (or the submission).
        latest = now + (1.0 - done) * max(0.0, now - since) / done
        earliest = None
        if self.moving_progress is not None and now > self.moving_since:
            span, took = done - self.moving_progress, now - self.moving_since
            earliest = now + (1.0 - done) * took / (span + ROUNDING)
            if span > ROUNDING:
                latest = min(latest, now + (1.0 - done) * took / (span - ROUNDING))
        return earliest, latest


def _will_pin(state: PollState, at: float, end_at: float) -> bool:
    """Whether a sample at ``at`` of a job ending at ``end_at`` would pin its end
    (:meth:`PollState.pinned`), if the job moves as its route's copies tell."""
    start = _told_start(state)
    if start is None or not start < at < end_at:
        return False
    return _pins(state, (at - start) / (end_at - start), end_at)


def _told_start(state: PollState) -> float | None:
    """The earliest the job began to move as its route's copies tell (not before its
    submission); None when they tell nothing or it was still at 0 % after that."""
    if state.moves_from is None:
        return None
    start = max(state.moves_from, state.started_at)
    return None if state.still_at is not None and state.still_at > start else start


def _pins(state: PollState, done: float, end: float) -> bool:
    """Whether a sample ``done`` of the way to ``end`` pins it: a start later by
    ``moves_within`` would put the end sooner by less than ``PINNED`` of the copy."""
    return state.moves_within * (1.0 - done) / done <= PINNED * (end - state.started_at)


# ``dataclasses.replace(state, ...)`` without the frozen ``__init__``'s ``object.__setattr__``
# per field (core/frozen.py): a new state per poll of every copy.
_replace_state = replacer(PollState)


@dataclass(frozen=True)
class Estimate:
    """When the job should end, whether the job's own rate says so (``precise``), and the
    earliest it may end (None: unknown) for the probes to keep clear of."""

    end_at: float
    precise: bool
    earliest: float | None = None


def estimate_end(state: PollState, expected_duration: float | None) -> Estimate | None:
    """The job's expected end, or None when nothing is known."""
    found = _estimate(state, expected_duration)
    return None if found is None else Estimate(*found)


_Found = tuple[float, bool, float | None]  # Estimate's fields, without an object per poll


def _estimate(state: PollState, expected_duration: float | None) -> _Found | None:
    """:func:`estimate_end`'s (end_at, precise, earliest)."""
    rate = state.rate()
    if rate is not None and state.last_at is not None and state.last_progress is not None:
        return state.last_at + (1.0 - state.last_progress) / rate, True, None
    expected = early = None
    if expected_duration is not None:
        expected = state.started_at + expected_duration
        early = state.started_at + (1.0 - SPREAD) * expected_duration
    bounds = state.bounds()
    if bounds is not None and state.moves_from is not None:
        pinned = state.pinned()
        if pinned is not None:
            return pinned, True, None
    if bounds is not None and state.last_at is not None:
        # Progress seen, no rate yet: the end lies within what the samples allow; the
        # expected duration, if known, is kept within those bounds.
        earliest, latest = bounds
        if expected is None:
            return latest, False, earliest
        end = min(latest, max(expected, earliest or state.last_at))
        if earliest is None and early is not None:
            earliest = min(early, end)
        return end, False, earliest
    if expected is not None:
        return expected, False, early
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
    elapsed = max(0.0, now - state.started_at)
    longest = max(poll_min, GROWTH * elapsed)  # no back-off waits longer
    estimate = _estimate(state, expected_duration)
    if estimate is not None and estimate[0] <= now and state.moving_since is None and state.polls:
        estimate = None  # still at 0 % past its expected end: not started, speed unknown
    if estimate is None:
        delay = min(doubled(poll_min, state.quiet_polls, BACKOFF_EXPONENT), longest) * spread
    else:
        end_at, precise, earliest = estimate
        left = end_at - now
        duration = max(0.0, end_at - state.started_at)
        if left <= 0 and state.polls == 0:
            delay = poll_min * spread  # adopted after a restart, past its end: look at once
        elif left <= 0:
            # Overdue: look again soon, then less and less often while nothing moves.
            overdue = max(poll_min, OVERDUE_SHARE * elapsed)
            delay = (
                min(doubled(overdue, max(state.quiet_polls - 1, 0), BACKOFF_EXPONENT), longest)
                * spread
            )
        elif precise:
            delay = left + MARGIN * duration * (1.0 + jitter)
        else:
            delay = _probe(state, now, end_at, earliest, spread, longest, poll_min)
    return min(poll_max, max(poll_min, delay))


def _probe(
    state: PollState,
    now: float,
    end_at: float,
    earliest: float | None,
    spread: float,
    longest: float,
    poll_min: float,
) -> float:
    """:func:`next_delay` of a probe (the end is not known precisely yet).

    A probe lands early enough for the polls after it (each ``poll_min`` or more apart) to fit
    before the earliest end: two after a first probe (a second probe, then the end), one after
    a second probe, or after a first probe whose sample will pin the end; with no idea of the
    earliest end, it samples again after at most a share of the time elapsed."""
    moving = state.moving_since is not None
    delay = (SECOND_PROBE if moving else FIRST_PROBE) * spread * (end_at - now)
    if earliest is None:
        delay = min(delay, longest * spread)
    elif moving:
        delay = min(delay, earliest - now - RESERVE * poll_min)
    else:
        before_two = min(delay, earliest - now - 2 * RESERVE * poll_min)
        delay = min(delay, earliest - now - RESERVE * poll_min)
        if not _will_pin(state, now + max(poll_min, delay), end_at):
            delay = before_two
    if not moving and state.still_at is not None:
        # Not moving yet, later than expected: no denser than with nothing known.
        delay = max(
            delay, min(doubled(poll_min, state.quiet_polls, BACKOFF_EXPONENT), longest) * spread
        )
    return delay
