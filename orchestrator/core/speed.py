"""What finished copies teach about the next ones: duration ~ fixed part + size / throughput.

The fit is a least-squares line of duration on size over the last ``WINDOW`` copies, kept as
running sums so that learning a copy and asking for an expectation cost the same with 5 or
500 samples (a run of 100,000 items asks once per copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.units import GIB

MIN_SAMPLES = 3
WINDOW = 500  # recent copies speak for the current conditions


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
class RouteSpeeds:
    """Copy speed per route: the copies from one region to another move at that link's pace,
    which another route's copies say little about. A route with fewer than ``MIN_SAMPLES``
    finished copies borrows the fit of all copies (``overall``, kept in the checkpoint)."""

    overall: SpeedModel = field(default_factory=SpeedModel)
    routes: dict[Route, SpeedModel] = field(default_factory=dict)

    def learn(self, route: Route, size_bytes: int | None, seconds: float) -> None:
        self.overall.learn(size_bytes, seconds)
        self.routes.setdefault(route, SpeedModel()).learn(size_bytes, seconds)

    def expected(self, route: Route, size_bytes: int | None) -> float | None:
        """Expected duration of a copy of this size on ``route``, or None before enough
        copies finished."""
        model = self.routes.get(route)
        own = model.expected(size_bytes) if model is not None else None
        return own if own is not None else self.overall.expected(size_bytes)
