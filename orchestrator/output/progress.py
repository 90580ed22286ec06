"""What a person watching a run sees: a live table on a terminal, plain lines elsewhere.

It only renders: the CLI owns the console it draws on and decides when it is shown. The model
is a rich renderable (``__rich__``), so a ``Live`` display redraws it on its own clock (the
elapsed time and the ETA move even when no item changes); it reads a snapshot of the items,
so the redraw thread never sees a dictionary change under it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.core.estimate import format_duration
from orchestrator.core.model import Item, Phase, PublicState
from orchestrator.engine.context import Counters
from orchestrator.output.report import Summary, summarize

RECENT_FAILURES = 5


def _duration(seconds: float) -> str:
    return format_duration(seconds)


def _counts(by_state: Mapping[PublicState, int]) -> tuple[int, int, int, int, int]:
    """Succeeded, failed, rejected, running and pending, in that order."""
    return (
        by_state[PublicState.SUCCEEDED],
        by_state[PublicState.FAILED],
        by_state[PublicState.REJECTED],
        by_state[PublicState.RUNNING],
        by_state[PublicState.PENDING],
    )


class ProgressModel:
    """The items of a run as they change, and a little history for the ETA."""

    def __init__(
        self,
        items: Iterable[Item],
        slots: int,
        *,
        title: str = "",
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        settle: float | None = None,
        blocked: Collection[str] = (),
    ) -> None:
        """``clock``: the run's (epoch seconds, as the items' times, when ``settle`` is given);
        ``settle``: how long a reconciling item may wait for its copy (the ETA counts it);
        ``blocked``: the tenants blocked in this run, read at each redraw (the run's own
        mapping): their items are copied by a later run, so the ETA leaves them out."""
        self.items = {item.key: item for item in items}
        self.slots = slots
        self.title = title
        self.counters = counters
        self.clock = clock
        self.settle = settle
        self.blocked = blocked
        self.started = clock()
        self.ended_at_start = self._ended(self.items.values())
        self.failures: deque[Item] = deque(maxlen=RECENT_FAILURES)

    def update(self, item: Item) -> None:
        self.items[item.key] = item
        if item.phase == Phase.FAILED:
            self.failures.append(item)

    def summary(self) -> Summary:
        return summarize(list(self.items.values()))

    @staticmethod
    def _ended(items: Iterable[Item]) -> int:
        """Copies that ended (succeeded or failed): rejections take no time and would skew it."""
        return sum(i.phase in (Phase.SUCCEEDED, Phase.FAILED) for i in items)

    def eta(self, summary: Summary | None = None) -> str:
        """Time left at the rate copies have ended in this run (— before any has), for the
        items this run can still copy: those of blocked tenants are left out, and counted."""
        s = summary or self.summary()
        held = self._held()
        said = f" ({held} items of blocked tenants not counted)" if held else ""
        left = s.by_state[PublicState.PENDING] + s.by_state[PublicState.RUNNING] - held
        gained = self._ended(list(self.items.values())) - self.ended_at_start
        elapsed = self.clock() - self.started
        if left <= 0:
            return "done" + said
        wait = self.longest_wait()
        if gained <= 0:
            return (f"{_duration(wait)} (reconciling)" if wait > 0 else "—") + said
        rate = elapsed / gained * left
        if wait > rate:
            return f"{_duration(wait)} (reconciling)" + said
        return _duration(rate) + said

    def _held(self) -> int:
        """Items not done of the tenants blocked in this run: no copy of theirs in this run."""
        blocked = self.blocked
        if not blocked:
            return 0
        left = (PublicState.PENDING, PublicState.RUNNING)
        return sum(
            i.row.tenant in blocked and i.phase.public in left for i in list(self.items.values())
        )

    def longest_wait(self) -> float:
        """Seconds until the last reconciling item's settle window ends (0: none waits): its
        copy may show up only then, so no ETA is shorter."""
        if self.settle is None:
            return 0.0
        now = self.clock()
        ends = [
            (item.unknown_since or now) + self.settle
            for item in self.items.values()
            if item.phase == Phase.RECONCILING
        ]
        return max(0.0, max(ends, default=now) - now)

    def line(self) -> str:
        """One plain progress line (for logs and non-terminals)."""
        s = self.summary()
        succeeded, failed, rejected, running, pending = _counts(s.by_state)
        done = succeeded + failed + rejected
        return (
            f"progress {done}/{s.total} done: {succeeded} succeeded, "
            f"{failed} failed, {rejected} rejected, "
            f"{running} running, {pending} pending; "
            f"elapsed {_duration(self.clock() - self.started)}, eta {self.eta(s)}"
        )

    def __rich__(self) -> RenderableType:
        return self.render()

    def render(self) -> RenderableType:
        s = self.summary()
        succeeded, failed, rejected, running, pending = _counts(s.by_state)
        done = succeeded + failed + rejected
        percent = 100 * done / s.total if s.total else 100.0
        title = Text.assemble(("ims-migrate run ", "bold"), (self.title, "bold cyan"))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(1, s.total), completed=done, width=50),
            Text(f"{percent:3.0f}%  {done}/{s.total} done", style="bold"),
            Text(
                f"elapsed {_duration(self.clock() - self.started)}  eta {self.eta(s)}",
                style="dim",
            ),
        )
        counts = Text.assemble(
            (f"{succeeded} succeeded", "green"),
            "  ",
            (f"{failed} failed", "bold red" if failed else "dim"),
            "  ",
            (f"{rejected} rejected", "yellow" if rejected else "dim"),
            "  ",
            (f"{running} running", "blue"),
            "  ",
            f"{pending} pending",
        )
        parts: list[RenderableType] = [title, bar, counts, Text(""), self._tenants(s)]
        if self.counters is not None:
            c = self.counters
            parts.append(
                Text(
                    f"copies submitted {c.submissions}  job polls {c.polls}  "
                    f"cloud busy (IMG.0060) {c.back_pressure}  reconciled {c.reconciliations}",
                    style="dim",
                )
            )
        if self.failures:
            parts.append(Text("recent failures", style="bold red"))
            parts.extend(
                Text(
                    f"  {i.row.tenant} {i.row.image_id} -> {i.row.target_region}: "
                    f"{i.error_code or ''} {i.error_message or i.detail}",
                    style="red",
                    overflow="ellipsis",
                    no_wrap=True,
                )
                for i in self.failures
            )
        return Group(*parts)

    def _tenants(self, s: Summary) -> Table:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("tenant", "slots in use", "running", "waiting", "done", "failed"):
            table.add_column(
                column, justify="left" if column in ("tenant", "slots in use") else "right"
            )
        for tenant, counts in s.by_tenant.items():
            succeeded, failed, rejected, running, pending = _counts(counts)
            if not running and not pending:
                continue
            used = s.in_flight.get(tenant, 0)
            slots = Text.assemble(
                ("■" * used, "blue"),
                ("□" * max(0, self.slots - used), "dim"),
                f" {used}/{self.slots}",
            )
            table.add_row(
                tenant,
                slots,
                str(running),
                str(pending),
                str(succeeded + rejected),
                Text(str(failed), style="red" if failed else ""),
            )
        if not table.row_count:
            table.add_row("(every tenant is done)", "", "", "", "", "")
        return table
