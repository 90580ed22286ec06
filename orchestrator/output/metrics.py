"""Prometheus text format for node_exporter's textfile collector, written atomically.

``run --metrics-file PATH`` writes it when the run starts, every ``METRICS_EVERY`` seconds
while it goes on, and when it ends. node_exporter reads every ``*.prom`` file of its
``--collector.textfile.directory``; the file is replaced by rename, so it never sees half of
one. Every series carries a ``list`` label (the migration list's path), so several lists can
report into one folder (one file each).

    ims_migrate_items{list,tenant,state}              items by public state (gauge)
    ims_migrate_in_flight{list,tenant}                copies that may hold a slot in the cloud
    ims_migrate_run_in_progress{list}                 1 while a run is going on, else 0
    ims_migrate_last_run_start_timestamp_seconds{list}
    ims_migrate_last_run_end_timestamp_seconds{list}  absent until a run has ended
    ims_migrate_last_run_exit_code{list}              absent until a run has ended
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.model import Item
from orchestrator.output.report import STATES, summarize
from orchestrator.state.atomic import write_atomic

METRICS_EVERY = 30.0  # seconds between two writes while a run goes on
PREFIX = "ims_migrate_"


@dataclass(frozen=True)
class RunFacts:
    """What the metrics say about the run besides the items."""

    list_path: str
    started_at: float
    in_progress: bool
    ended_at: float | None = None
    exit_code: int | None = None


def _label(value: str) -> str:
    """A label value escaped as the text format wants (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_label(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_metrics(items: Iterable[Item], facts: RunFacts) -> str:
    """The metrics as Prometheus text exposition format (version 0.0.4)."""
    summary = summarize(items)
    lst = facts.list_path
    lines: list[str] = []

    def family(name: str, help_text: str) -> None:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")

    def sample(name: str, value: float, **labels: str) -> None:
        lines.append(f"{PREFIX}{name}{_labels(list=lst, **labels)} {_number(value)}")

    family("items", "Items of the migration list by state (pending, running, succeeded, ...).")
    for tenant, counts in summary.by_tenant.items():
        for state in STATES:
            sample("items", counts[state], tenant=tenant, state=state)
    family("in_flight", "Copies that may be in progress in the cloud (holding a slot), per tenant.")
    for tenant, count in summary.in_flight.items():
        sample("in_flight", count, tenant=tenant)
    family("run_in_progress", "1 while a run of this list is going on, 0 once it has ended.")
    sample("run_in_progress", 1 if facts.in_progress else 0)
    family("last_run_start_timestamp_seconds", "When the last run started (Unix time).")
    sample("last_run_start_timestamp_seconds", round(facts.started_at, 3))
    if facts.ended_at is not None:
        family("last_run_end_timestamp_seconds", "When the last run ended (Unix time).")
        sample("last_run_end_timestamp_seconds", round(facts.ended_at, 3))
    if facts.exit_code is not None:
        family(
            "last_run_exit_code",
            "Exit code of the last run: 0 done, 1 needs a look, 2 bad input, 75 run again later.",
        )
        sample("last_run_exit_code", facts.exit_code)
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, text: str) -> None:
    """Replace ``path`` by rename (a temp file in the same folder), readable by node_exporter.

    Raises OSError when the folder is missing or not writable.
    """
    # The temp file ends in .tmp, never in .prom; 0644: node_exporter runs as another user
    # (nothing secret in it).
    write_atomic(path, text, durable=False, suffix=".tmp", mode=0o644)
