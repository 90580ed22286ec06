"""What a person watching a run sees: a live table on a terminal, plain lines elsewhere.

It only renders: the CLI owns the console it draws on and decides when it is shown.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.model import Item, Phase
from orchestrator.report import summarize


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressModel:
    """The items of a run as they change, and a little history for the ETA."""

    def __init__(self, items: Iterable[Item], slots: int) -> None:
        self.items = {item.key: item for item in items}
        self.slots = slots
        self.started = time.monotonic()
        self.done_at_start = sum(i.phase.is_terminal for i in self.items.values())
        self.failures: deque[Item] = deque(maxlen=5)

    def update(self, item: Item) -> None:
        self.items[item.key] = item
        if item.phase == Phase.FAILED:
            self.failures.append(item)

    def eta(self) -> str:
        summary = summarize(self.items.values())
        done = summary.total - summary.by_state["pending"] - summary.by_state["running"]
        gained = done - self.done_at_start
        left = summary.total - done
        elapsed = time.monotonic() - self.started
        if gained <= 0 or left <= 0:
            return "—" if left else "done"
        return _duration(elapsed / gained * left)

    def line(self) -> str:
        """One plain progress line (for logs and non-terminals)."""
        s = summarize(self.items.values())
        states = s.by_state
        done = states["succeeded"] + states["failed"] + states["rejected"]
        return (
            f"progress {done}/{s.total} done: {states['succeeded']} succeeded, "
            f"{states['failed']} failed, {states['rejected']} rejected, "
            f"{states['running']} running, {states['pending']} pending; "
            f"elapsed {_duration(time.monotonic() - self.started)}, eta {self.eta()}"
        )

    def render(self) -> RenderableType:
        s = summarize(self.items.values())
        states = s.by_state
        done = states["succeeded"] + states["failed"] + states["rejected"]
        head = Text.assemble(
            ("ims-migrate ", "bold"),
            f"{done}/{s.total} done  ",
            (f"{states['succeeded']} succeeded  ", "green"),
            (f"{states['failed']} failed  ", "red" if states["failed"] else ""),
            (f"{states['rejected']} rejected  ", "yellow" if states["rejected"] else ""),
            f"{states['running']} running  {states['pending']} pending  ",
            f"elapsed {_duration(time.monotonic() - self.started)}  eta {self.eta()}",
        )
        bar = ProgressBar(total=max(1, s.total), completed=done, width=60)
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("tenant", "slots", "running", "pending", "done", "failed"):
            table.add_column(column, justify="left" if column == "tenant" else "right")
        for tenant, counts in s.by_tenant.items():
            if not counts["running"] and not counts["pending"]:
                continue
            used = s.in_flight.get(tenant, 0)
            slots = "■" * used + "□" * max(0, self.slots - used)
            table.add_row(
                tenant,
                slots,
                str(counts["running"]),
                str(counts["pending"]),
                str(counts["succeeded"] + counts["rejected"]),
                str(counts["failed"]),
            )
        failures = [
            Text(f"failed {i.key}: {i.error_code or ''} {i.error_message or ''}", style="red")
            for i in self.failures
        ]
        return Group(head, bar, table, *failures)
