"""When to poll a job next: a pure schedule, aware of progress and of the image's size.

A copy's end is estimated from the job's own ``process_percent`` rate when it moves, else from
the speed of copies already finished (bytes per second) and the image's size. The next poll is
aimed a little before the estimated end and the estimate is refined at each poll, so the polls
close in on the end geometrically; once the end is overdue or nothing is known, the interval
backs off exponentially. Every interval is jittered and clamped to ``[poll_min, poll_max]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

AIM = 0.85  # poll at this share of the estimated time left
JITTER = 0.1  # +-10 %


@dataclass(frozen=True)
class PollState:
    started_at: float  # when the copy was submitted (or adopted)
    last_at: float | None = None
    last_progress: float | None = None
    moving_since: float | None = None  # first poll that saw progress > 0
    moving_progress: float | None = None
    quiet_polls: int = 0  # polls in a row that taught nothing new

    def observe(self, now: float, progress: float | None) -> PollState:
        """The state after a poll at ``now`` that showed ``progress`` (0..1, or None)."""
        moved = progress is not None and progress > (self.last_progress or 0.0)
        state = replace(
            self,
            last_at=now,
            last_progress=progress if progress is not None else self.last_progress,
            quiet_polls=0 if moved else self.quiet_polls + 1,
        )
        if moved and self.moving_since is None:
            state = replace(state, moving_since=now, moving_progress=progress)
        return state


def remaining_time(state: PollState, now: float, expected_duration: float | None) -> float | None:
    """Estimated seconds until the job ends, or None when nothing is known."""
    if (
        state.moving_since is not None
        and state.moving_progress is not None
        and state.last_at is not None
        and state.last_progress is not None
        and state.last_at > state.moving_since
        and state.last_progress > state.moving_progress
    ):
        rate = (state.last_progress - state.moving_progress) / (state.last_at - state.moving_since)
        return (1.0 - state.last_progress) / rate - (now - state.last_at)
    if (
        state.last_progress
        and state.last_at is not None
        and state.last_at > state.started_at
        and expected_duration is None
    ):
        # One sample only: the rate since submission (slightly slow: it includes the INIT phase).
        rate = state.last_progress / (state.last_at - state.started_at)
        return (1.0 - state.last_progress) / rate - (now - state.last_at)
    if expected_duration is not None:
        return expected_duration - (now - state.started_at)
    return None


def next_delay(
    state: PollState,
    now: float,
    *,
    expected_duration: float | None,
    poll_min: float,
    poll_max: float,
    jitter: float = 0.5,
) -> float:
    """Seconds to wait before the next poll. ``jitter`` is a uniform random number in [0, 1)."""
    left = remaining_time(state, now, expected_duration)
    if left is not None and left > poll_min:
        delay = left * AIM if left * (1 - AIM) > poll_min else left + poll_min * 0.5
    else:
        # Overdue or unknown: exponential back-off from the shortest interval.
        delay = poll_min * (2.0 ** min(state.quiet_polls, 16))
    delay *= 1.0 + JITTER * (2.0 * jitter - 1.0)
    return min(poll_max, max(poll_min, delay))
