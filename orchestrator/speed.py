"""What finished copies teach about the next ones: duration ~ fixed part + size / throughput."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_SAMPLES = 3


@dataclass
class SpeedModel:
    """Least-squares fit of copy duration on image size, over the copies seen so far."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (size GiB, seconds)

    def learn(self, size_bytes: int | None, seconds: float) -> None:
        if size_bytes and seconds > 0:
            self.samples.append((size_bytes / 2**30, seconds))
            del self.samples[:-500]  # recent copies speak for the current conditions

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per GiB), or None with too little to go on."""
        if len(self.samples) < MIN_SAMPLES:
            return None
        n = len(self.samples)
        mean_x = sum(x for x, _ in self.samples) / n
        mean_y = sum(y for _, y in self.samples) / n
        var = sum((x - mean_x) ** 2 for x, _ in self.samples)
        if var <= 1e-9:
            return 0.0, mean_y / mean_x if mean_x else 0.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in self.samples) / var
        slope = max(slope, 0.0)
        return max(0.0, mean_y - slope * mean_x), slope

    def expected(self, size_bytes: int | None) -> float | None:
        """Expected duration of a copy of this size, or None before enough copies finished."""
        fitted = self.fit()
        if fitted is None or not size_bytes:
            return None
        fixed, per_gib = fitted
        return fixed + per_gib * size_bytes / 2**30

    def bytes_per_second(self) -> float | None:
        total_size = sum(x for x, _ in self.samples)
        total_time = sum(y for _, y in self.samples)
        if not self.samples or total_time <= 0:
            return None
        return total_size * 2**30 / total_time
