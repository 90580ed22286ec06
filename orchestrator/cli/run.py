"""``run`` (and the demo, which runs the same way): progress, metrics, what to say at the end."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.table import Table

from orchestrator.cli.common import (
    config_of,
    event_lines,
    exit_code_of,
    leaves_of,
    problem_line,
    problem_lines,
    say,
    summary_table,
)
from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import Seams
from orchestrator.commands.common import UsageError, state_dir_for
from orchestrator.commands.run import RunRequest, RunSummary, execute_run
from orchestrator.config import Config
from orchestrator.config_file import load_config
from orchestrator.core.advice import blocked_advice, next_step, quota_full
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.engine.context import RunContext
from orchestrator.eventloop import run_loop
from orchestrator.output.metrics import METRICS_EVERY, RunFacts, render_metrics, write_metrics
from orchestrator.state.checkpoint import LockHeld, read_snapshot, snapshot_meta
from orchestrator.state.codec import item_from_dict
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import StoreError

if TYPE_CHECKING:  # imported where they are used: not by a run without a progress view
    from rich.live import Live

    from orchestrator.commands.discover import DiscoverResult
    from orchestrator.output.progress import ProgressModel

PLAIN_PROGRESS_EVERY = 30.0  # seconds between two plain progress lines
TABLE_TENANTS = 50  # tenants shown at the end of a run (status shows them all)


# -- run -----------------------------------------------------------------------------------------


def progress_mode(choice: str, quiet: bool, stream: IO[str]) -> str:
    if quiet:
        return "none"
    if choice == "auto":
        return "live" if stream.isatty() else "plain"
    return choice


class RunWatch:
    """One run's callbacks: the live view or plain lines on stderr, and the metrics file."""

    def __init__(
        self,
        mode: str,
        err: Console,
        list_path: Path,
        metrics: Path | None,
        clock: Clock | None = None,
    ) -> None:
        self.mode = mode
        self.clock = clock or RealClock()
        self.err = err
        self.list_path = list_path
        self.metrics = metrics
        self.model: ProgressModel | None = None
        self.live: Live | None = None
        self.started = self.clock.now()
        self.previous: tuple[float | None, int | None] = (None, None)  # last run's end, exit
        self.metrics_error = ""
        self.metrics_at = 0.0  # the run's elapsed seconds at the last tick that wrote metrics

    def on_start(self, ctx: RunContext, items: list[Item]) -> None:
        self.previous = (ctx.store.meta.last_end, ctx.store.meta.last_exit)
        if self.mode == "none" and self.metrics is None:
            return  # nothing shown, nothing written: no copy of every item's state (memory)
        from orchestrator.output.progress import ProgressModel

        self.model = ProgressModel(
            items,
            ctx.config.max_concurrent_copies,
            title=str(self.list_path),
            counters=ctx.counters,
            clock=ctx.clock.now,
            settle=ctx.config.timing.settle,
            blocked=ctx.blocked,  # live: a tenant blocked mid-run leaves the ETA at once
        )
        if self.mode == "live":
            from rich.live import Live

            self.live = Live(self.model, console=self.err, refresh_per_second=4)
            self.live.start()
        elif self.mode == "plain":
            say(self.err, self.model.line())
        self.write_metrics(list(items), in_progress=True)

    def on_change(self, item: Item) -> None:
        model = self.model
        if model is None:
            return
        model.update(item)
        if self.mode == "plain" and item.phase == Phase.FAILED:
            say(self.err, problem_line(item))

    def tick(self, elapsed: float) -> None:
        """Every ``PLAIN_PROGRESS_EVERY`` seconds of the run (``elapsed``), whatever happens:
        the plain progress line, and the metrics every ``METRICS_EVERY``."""
        model = self.model
        if model is None:
            return
        if self.mode == "plain":
            say(self.err, model.line())
        if elapsed - self.metrics_at >= METRICS_EVERY - 1e-6:
            self.write_metrics(list(model.items.values()), in_progress=True)
            self.metrics_at = elapsed

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.model is not None and self.mode == "plain":
            say(self.err, self.model.line())

    def write_metrics(
        self, items: list[Item], *, in_progress: bool, exit_code: int | None = None
    ) -> None:
        """Write the metrics file; a failure is remembered and said at the end."""
        if self.metrics is None:
            return
        ended, last_exit = self.previous
        facts = RunFacts(
            list_path=str(self.list_path.absolute()),
            started_at=self.started,
            in_progress=in_progress,
            ended_at=ended if in_progress else self.clock.now(),
            exit_code=last_exit if in_progress else exit_code,
        )
        try:
            write_metrics(self.metrics, render_metrics(items, facts))
        except OSError as exc:
            self.metrics_error = (
                f"cannot write the metrics file {self.metrics}: {exc.strerror or exc} "
                "(create its folder or fix its permissions)"
            )


async def run_with_progress(
    request: RunRequest, watch: RunWatch, run: Callable[..., Any] = execute_run
) -> RunSummary:
    """The run, with its progress and metrics refreshed on the run's clock while it goes on,
    even when nothing changes (one copy waiting for hours still shows its line)."""
    clock = watch.clock
    async with anyio.create_task_group() as group:

        async def ticker() -> None:
            started = clock.now()
            every = min(PLAIN_PROGRESS_EVERY, METRICS_EVERY)
            while True:
                await clock.sleep(every)
                watch.tick(clock.now() - started)

        group.start_soon(ticker)
        try:
            summary: RunSummary = await run(
                request, on_change=watch.on_change, on_start=watch.on_start
            )
        finally:
            group.cancel_scope.cancel()
            watch.stop()
    return summary


def _refused(code: str, passing: bool) -> str:
    """What the cloud refused: the key (or its token, or the request's date), or a permission."""
    return "permission" if passing and code not in ("APIGW.0303", "APIGW.0307") else "credentials"


def attention_lines(summary: RunSummary, config: Config) -> list[str]:
    """Bad rows, refused credentials and full quotas: what is wrong and what to do, in the words
    of events.jsonl."""
    lines = [str(problem) for problem in summary.problems]  # the rejected rows' own words
    lines += [
        f"tenant {tenant}: {_refused(why.code, passing)} refused ({why.code}: "
        f"{why.message}); " + blocked_advice(tenant, config.tenant(tenant), lasting=not passing)
        for tenant, why in summary.blocked.items()
        for passing in [tenant in summary.blocked_for_run]
    ]
    lines += [
        f"endpoint {outage}; the run stopped using it: run again once it answers"
        for outage in summary.outages.values()
    ]
    lines += [
        f"tenant {t}, {r}: {quota_full(error, t, r)}"
        for (t, r), error in sorted(summary.quota_full.items())
    ]
    return lines


def print_run_outcome(
    summary: RunSummary, config: Config, quiet: bool, out: Console, err: Console
) -> None:
    for line in attention_lines(summary, config):
        say(err, line)
    if not quiet:
        for warning in summary.warnings:
            say(err, f"warning: {warning}")
    if quiet and summary.exit_code != ExitCode.ATTENTION:
        return
    target = err if quiet else out
    listed = [i for i in summary.items if i.listed]
    if not quiet:
        target.print(summary_table(listed, most=TABLE_TENANTS))
    for line in problem_lines([i for i in listed if not i.row.problem]):  # said above
        say(target, line)
    skipped = " (nothing to do: the list was already finished)" if summary.skipped else ""
    advice = summary.advice or next_step(summary.exit_code)
    say(target, f"exit {summary.exit_code}: {summary.reason}{skipped}. Next: {advice}")
    say(target, f"report: {summary.state_dir / 'report.csv'}")


def checkpoint_items(state_dir: Path) -> list[Item]:
    """The checkpoint's items, or none when it cannot be read (for the metrics of a failed run)."""
    try:
        snap = read_snapshot(state_dir, item_from_dict)
    except (OSError, StoreError):
        return []
    return list(snap["items"].values()) if snap else []


def cmd_run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: Console,
    err: Console,
    seams: Seams | None = None,
) -> int:
    metrics = args.metrics_file
    if metrics is not None and not Path(metrics).parent.is_dir():
        raise UsageError(
            f"--metrics-file {metrics}: the folder {Path(metrics).parent} does not exist "
            "(create it, or give the textfile collector's folder)"
        )
    config = config_of(args, environ, calls=True)
    max_failures, ratio = args.max_failures or (None, None)
    request = RunRequest(
        list_path=Path(args.list),
        config=config,
        environ=environ,
        state_dir=args.state_dir,
        deadline_seconds=args.deadline,
        retry_failed=args.retry_failed,
        repair_state=args.repair_state,
        max_failures=max_failures,
        max_failure_ratio=ratio,
        tenants=frozenset(args.tenant),
        source_regions=frozenset(args.source_region),
        target_regions=frozenset(args.target_region),
    )
    seams = seams or Seams()
    watch = RunWatch(
        progress_mode(args.progress, args.quiet, err.file),
        err,
        request.list_path,
        metrics,
        seams.clock,
    )
    try:
        run = partial(execute_run, clouds=seams.clouds, clock=seams.clock)
        summary = run_loop(partial(run_with_progress, request, watch, run), environ)
    except BaseException as exc:
        leaves = leaves_of(exc)
        if not any(isinstance(e, LockHeld) for e in leaves):  # the holder owns the metrics
            state_dir = state_dir_for(request.list_path, request.state_dir)
            watch.write_metrics(
                checkpoint_items(state_dir), in_progress=False, exit_code=exit_code_of(leaves)
            )
        raise
    watch.write_metrics(summary.items, in_progress=False, exit_code=summary.exit_code)
    print_run_outcome(summary, config, args.quiet, out, err)
    if watch.metrics_error:
        say(err, f"warning: {watch.metrics_error}")
    return summary.exit_code


def cmd_demo(
    args: argparse.Namespace, environ: Mapping[str, str], out: Console, err: Console
) -> int:
    from orchestrator.cli.discover import print_discovery
    from orchestrator.commands.demo import run_demo
    from orchestrator.output.report_html import render_html

    mode = progress_mode(args.progress, False, err.file)

    async def run(request: RunRequest) -> RunSummary:
        watch = RunWatch(mode, err, request.list_path, None)
        return await run_with_progress(request, watch)

    def discovered(result: DiscoverResult) -> None:
        print_discovery(result, out, appended=False)
        say(out, "the planted bad rows are appended to it; run follows")

    outcome = run_loop(
        lambda: run_demo(
            args.workdir, seed=args.seed, run=run, environ=environ, on_discovered=discovered
        ),
        environ,
    )
    summary = outcome.summary
    config = load_config(outcome.workdir / "ims-migrate.toml", environ, outcome.workdir)
    print_run_outcome(summary, config, False, out, err)
    html_report = outcome.workdir / "report.html"
    snap = read_snapshot(summary.state_dir)
    html_report.write_text(
        render_html(
            summary.items,
            RunMeta() if snap is None else snapshot_meta(snap, summary.state_dir),
            generated_at=time.time(),
            events=event_lines(summary.state_dir),
        ),
        encoding="utf-8",
    )
    truth = outcome.truth
    copies = list(truth.copies)
    polls = truth.requests.get("job", 0)
    table = Table(title="demo: what the simulator saw", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("rows in the list", str(sum(item.listed for item in summary.items)))
    table.add_row("rows found by discover", str(len(outcome.discovery.added)))
    table.add_row("wall time", f"{outcome.elapsed:.1f} s")
    table.add_row("copies made", str(len(copies)))
    table.add_row("job polls per copy", f"{polls / max(1, len(copies)):.1f}")
    table.add_row(
        "max copies in flight per tenant",
        ", ".join(f"{k}={v}" for k, v in sorted(truth.max_in_flight.items())),
    )
    table.add_row("items submitted twice", str(len(truth.duplicates)))
    table.add_row("lost replies injected", str(truth.lost_replies))
    table.add_row("requests", ", ".join(f"{k}={v}" for k, v in sorted(truth.requests.items())))
    out.print(table)
    out.print(f"files: {outcome.workdir}", highlight=False, soft_wrap=True)
    out.print(f"html report: {html_report}", highlight=False, soft_wrap=True)
    if outcome.ok:
        planted = sum(item.phase == Phase.REJECTED for item in summary.items)
        out.print("demo: every valid row succeeded, every planted bad row was rejected, "
                  "at most 5 copies in flight per tenant, no duplicate.")  # fmt: skip
        say(out, f"demo: the {planted} rejections above were planted on purpose: \"exit "
                 f"{summary.exit_code}\" is what a real run of such a list would exit with; the "
                 "demo itself exits 0 because everything happened as planted.")  # fmt: skip
        return ExitCode.OK
    for mismatch in outcome.mismatches:
        say(err, f"demo: {mismatch}")
    return ExitCode.ATTENTION
