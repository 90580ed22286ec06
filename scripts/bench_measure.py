"""The benchmark's figures, from the simulator's ground truth and the tool's events.jsonl.

* floor of a tenant = max(sum of its copy durations / cap, its longest copy), durations from
  the simulator's truth (``begin`` = accepted, ``end`` = the job ended);
* makespan of a tenant = from the tool's first submission to the tool recording its last
  completion (the ``item.succeeded`` event);
* efficiency = floor / makespan (per tenant; the run's figure is their mean, the worst is shown
  too, and the whole run's: the largest floor over the run's makespan);
* detection lag of a copy = the tool's record of the copy made (``item.verifying``, the slot
  released; ``item.succeeded`` when nothing is checked after the copy) - the job's end, as a
  share of the copy's duration; the lag to the recorded success (after the checks and the
  carrying of tags that follow the copy) is shown beside it;
* polls per copy = job requests the simulator answered / copies.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.simulator.truth import Truth

CAP = 5


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def stamp(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def recorded_successes(events: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Item key -> when the tool recorded its success (epoch seconds)."""
    return {
        str(event["item"]): stamp(event)
        for event in events
        if event.get("event") == "item.succeeded" and event.get("item")
    }


def recorded_detections(events: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Item key -> when the tool first recorded its copy made (epoch seconds): the job seen
    ended, before the checks after the copy."""
    seen: dict[str, float] = {}
    for event in events:
        name, item = event.get("event"), event.get("item")
        if item and name in ("item.verifying", "item.succeeded"):
            seen.setdefault(str(item), stamp(event))
    return seen


def detection_lags(truth: Truth, detected: Mapping[str, float]) -> list[float]:
    """Each copy's detection lag (the tool's record of it made - the job's end), as a share
    of the copy's duration; copies the tool did not record are left out."""
    lags = []
    for copy in truth.copies:
        seen = detected.get(f"{copy.account}/{copy.image_id}/{copy.target_region}")
        if seen is not None and copy.end > copy.begin:
            lags.append((seen - copy.end) / (copy.end - copy.begin))
    return lags


def last_event(events: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for event in reversed(events):
        if event.get("event") == name:
            return event
    return None


def copy_figures(
    truth: Truth, recorded: Mapping[str, float], detected: Mapping[str, float]
) -> dict[str, Any]:
    """Efficiency, lag and polls of one run."""
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    lags: list[float] = []
    recorded_lags: list[float] = []
    missing = 0
    for copy in truth.copies:
        key = f"{copy.account}/{copy.image_id}/{copy.target_region}"
        duration = copy.end - copy.begin
        seen = recorded.get(key)
        if seen is None:
            missing += 1
            continue
        lags.append((detected.get(key, seen) - copy.end) / duration)
        recorded_lags.append((seen - copy.end) / duration)
        by_tenant[copy.account].append({**asdict(copy), "duration": duration, "seen": seen})
    tenants = {}
    for tenant, copies in sorted(by_tenant.items()):
        durations = [c["duration"] for c in copies]
        floor = max(sum(durations) / CAP, max(durations))
        makespan = max(c["seen"] for c in copies) - min(c["begin"] for c in copies)
        tenants[tenant] = {
            "copies": len(copies),
            "floor": floor,
            "makespan": makespan,
            "efficiency": floor / makespan,
        }
    all_copies = [c for copies in by_tenant.values() for c in copies]
    run_makespan = max(c["seen"] for c in all_copies) - min(c["begin"] for c in all_copies)
    copies_total = len(truth.copies)
    requests = truth.requests
    return {
        "copies": copies_total,
        "unrecorded": missing,
        "duplicates": len(truth.duplicates),
        "max_in_flight": max(truth.max_in_flight.values() or [0]),
        "efficiency": statistics.fmean(t["efficiency"] for t in tenants.values()),
        "efficiency_worst": min(t["efficiency"] for t in tenants.values()),
        "efficiency_run": max(t["floor"] for t in tenants.values()) / run_makespan,
        "makespan": run_makespan,
        "polls_per_copy": requests.get("job", 0) / max(1, copies_total),
        "requests_per_copy": sum(requests.values()) / max(1, copies_total),
        "lag_mean": statistics.fmean(lags),
        "lag_median": statistics.median(lags),
        "lag_p95": _quantile(lags, 0.95),
        "lag_max": max(lags),
        "lag_recorded_mean": statistics.fmean(recorded_lags),
        "tenants": tenants,
    }


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(statistics.median(float(run[key]) for run in runs))
