"""What finished copies teach about the next ones: duration ~ fixed part + size / throughput,
and when a copy begins to move after its request is answered.

The fit is a least-squares line of duration on size over the last ``WINDOW`` copies, kept as
running sums so that learning a copy and asking for an expectation cost the same with 5 or
500 samples (a run of 100,000 items asks once per copy).

A copy's start delay (:class:`StartDelays`) is read from its own progress (the moment its
rate puts it at 0 %), counted from its copy request's answer: an ``INIT`` phase, a queue in
the cloud, the tool's own late reading of answers. When a route's recent copies agree on it,
one progress sample of the next copy pins its end (core/polling.py ``PollState.pinned``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from orchestrator.core.units import GIB

MIN_SAMPLES = 3
WINDOW = 500  # recent copies speak for the current conditions
START_WINDOW = 32  # start delays: the recent copies of a route
START_MIN = 8  # start delays learned before they are told
START_QUANTILES = (0.1, 0.9)  # the range told: its low end and its width
EXPLORE = 8  # every this many copies of a route are told nothing: probed twice, they learn


@dataclass
class SpeedModel:
    """Least-squares fit of copy duration on image size, over the copies seen so far."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (size GiB, seconds)
    _sums: list[float] = field(default_factory=lambda: [0.0] * 5, init=False, repr=False)
    _learned: int = field(default=0, init=False, repr=False)
    # ``fit()`` as of the last sample learned (asked at every poll of every copy, it changes
    # only when a copy ends), once made (``_fit_made``).
    _fitted: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)
    _fit_made: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        del self.samples[:-WINDOW]
        self._resum()

    def _resum(self) -> None:
        """Recompute the sums (n, x, y, xx, xy) from the samples; also clears rounding drift."""
        sums = [0.0] * 5
        for x, y in self.samples:
            sums[0] += 1
            sums[1] += x
            sums[2] += y
            sums[3] += x * x
            sums[4] += x * y
        self._sums = sums
        self._fit_made = False

    def _add(self, x: float, y: float, sign: float) -> None:
        sums = self._sums
        sums[0] += sign
        sums[1] += sign * x
        sums[2] += sign * y
        sums[3] += sign * x * x
        sums[4] += sign * x * y
        self._fit_made = False

    def learn(self, size_bytes: int | None, seconds: float) -> None:
        if not size_bytes or seconds <= 0:
            return
        sample = (size_bytes / GIB, seconds)
        self.samples.append(sample)
        self._add(*sample, 1.0)
        if len(self.samples) > WINDOW:
            self._add(*self.samples.pop(0), -1.0)
        self._learned += 1
        if self._learned % WINDOW == 0:
            self._resum()

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per GiB), or None with too little to go on."""
        if not self._fit_made:
            self._fitted, self._fit_made = self._fit(), True
        return self._fitted

    def _fit(self) -> tuple[float, float] | None:
        n, sum_x, sum_y, sum_xx, sum_xy = self._sums
        if n < MIN_SAMPLES:
            return None
        mean_x = sum_x / n
        mean_y = sum_y / n
        var = sum_xx - n * mean_x * mean_x
        if var <= 1e-9 * max(1.0, sum_xx):
            return 0.0, mean_y / mean_x if mean_x else 0.0
        slope = max((sum_xy - n * mean_x * mean_y) / var, 0.0)
        return max(0.0, mean_y - slope * mean_x), slope

    def expected(self, size_bytes: int | None) -> float | None:
        """Expected duration of a copy of this size, or None before enough copies finished."""
        fitted = self.fit()
        if fitted is None or not size_bytes:
            return None
        fixed, per_gib = fitted
        return fixed + per_gib * size_bytes / GIB


Route = tuple[str, str]  # (source region, target region)


@dataclass
class StartDelays:
    """Seconds from a copy request's answer to the moment its copy began to move, for the
    recent copies of one route: the low end of their range and its width once there are
    ``START_MIN`` (a copy told them takes its end from one sample only when the width moves
    that end little: core/polling.py ``PINNED``). Every ``EXPLORE``-th copy is told nothing:
    it probes twice and the range stays current."""

    delays: deque[float] = field(default_factory=lambda: deque(maxlen=START_WINDOW))
    told: tuple[float, float] | None = None
    asked: int = 0

    def learn(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) < START_MIN:
            return
        ordered = sorted(self.delays)
        last = len(ordered) - 1
        low = ordered[math.floor(START_QUANTILES[0] * last)]
        high = ordered[math.ceil(START_QUANTILES[1] * last)]
        self.told = low, high - low

    def ask(self) -> tuple[float, float] | None:
        """(earliest delay, width) for the next copy, or None (too few copies, or its turn
        to learn)."""
        self.asked += 1
        return None if self.asked % EXPLORE == 0 else self.told


@dataclass
class RouteSpeeds:
    """Copy speed per route: the copies from one region to another move at that link's pace,
    which another route's copies say little about. A route with fewer than ``MIN_SAMPLES``
    finished copies borrows the fit of all copies (``overall``, kept in the checkpoint)."""

    overall: SpeedModel = field(default_factory=SpeedModel)
    routes: dict[Route, SpeedModel] = field(default_factory=dict)
    starts: dict[Route, StartDelays] = field(default_factory=dict)  # this run's only

    def learn(self, route: Route, size_bytes: int | None, seconds: float) -> None:
        self.overall.learn(size_bytes, seconds)
        self.routes.setdefault(route, SpeedModel()).learn(size_bytes, seconds)

    def expected(self, route: Route, size_bytes: int | None) -> float | None:
        """Expected duration of a copy of this size on ``route``, or None before enough
        copies finished."""
        model = self.routes.get(route)
        own = model.expected(size_bytes) if model is not None else None
        return own if own is not None else self.overall.expected(size_bytes)

    def learn_start(self, route: Route, delay: float) -> None:
        """A copy on ``route`` began to move ``delay`` seconds after its request's answer."""
        starts = self.starts.get(route)
        if starts is None:
            starts = self.starts[route] = StartDelays()
        starts.learn(delay)

    def start_delay(self, route: Route) -> tuple[float, float] | None:
        """For the next copy on ``route``: the earliest it should begin to move after its
        request's answer and how much later it may (:class:`StartDelays`), or None."""
        starts = self.starts.get(route)
        return None if starts is None else starts.ask()
