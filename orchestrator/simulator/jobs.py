"""The simulator's copy jobs: their life on the clock passed in, and how the API shows them.

A job is ``INIT`` for ``init_seconds``, then ``RUNNING`` with a linear ``process_percent``,
then ``SUCCESS`` or ``FAIL``; nothing moves it but ``now``, so a test can jump time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JOB_TYPE = "imsCrossRegionCopyImageJob"
INIT, RUNNING, SUCCESS, FAIL = "INIT", "RUNNING", "SUCCESS", "FAIL"
LIVE = frozenset({INIT, RUNNING})


def iso_time(moment: float, *, millis: bool = False) -> str:
    """``2026-03-27T01:17:50.446Z`` (jobs) or ``2026-03-27T01:17:50Z`` (images)."""
    stamp = datetime.fromtimestamp(moment, UTC)
    if millis:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimJob:
    """One copy job (or an "external" one that only holds a slot). Times in epoch seconds."""

    job_id: str
    account: str
    source_region: str
    begin: float
    run_start: float  # INIT ends
    end: float  # RUNNING ends (SUCCESS or FAIL)
    fails: bool = False
    error_code: str | None = None
    fail_reason: str | None = None
    external: bool = False
    image_id: str = ""  # the source image
    target_region: str = ""
    target_project: str = ""
    target_image_id: str = ""
    name: str = ""

    def status(self, now: float) -> str:
        if now < self.run_start:
            return INIT
        if now < self.end:
            return RUNNING
        return FAIL if self.fails else SUCCESS

    def progress(self, now: float) -> float:
        if now >= self.end:
            return 1.0 if not self.fails else self._linear(self.end)
        return self._linear(now)

    def _linear(self, moment: float) -> float:
        span = self.end - self.run_start
        if moment <= self.run_start or span <= 0:
            return 0.0
        return round(min(0.99, (moment - self.run_start) / span), 3)

    def to_api(self, now: float) -> dict[str, Any]:
        """The job exactly as ``GET /v1/cloudimages/job/{job_id}`` shows it."""
        status = self.status(now)
        entities: dict[str, Any] = {
            "image_name": self.name,
            "process_percent": self.progress(now),
            "current_task": "" if status in (SUCCESS, FAIL) else "copyImage",
        }
        if status == SUCCESS:
            entities["image_id"] = self.target_image_id
            entities["process_percent"] = 1
        return {
            "job_id": self.job_id,
            "job_type": JOB_TYPE,
            "begin_time": iso_time(self.begin, millis=True),
            "end_time": iso_time(self.end, millis=True) if status in (SUCCESS, FAIL) else "",
            "status": status,
            "error_code": self.error_code if status == FAIL else None,
            "fail_reason": self.fail_reason if status == FAIL else None,
            "entities": entities,
        }
