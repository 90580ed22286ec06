"""argv -> commands. The only module that prints, reads argv or exits.

Exit codes (most severe first): 2 usage, config or input error (nothing submitted); 74 the
state cannot be saved; 70 internal error (a bug); 1 failed or rejected items, a blocked tenant
or a failure threshold reached; 75 lock held, or stopped early with work left (deadline,
signal, outage): run again later; 0 every item succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator import __version__
from orchestrator.checkpoint import CheckpointCorrupt, LockHeld, read_snapshot
from orchestrator.codec import item_from_dict
from orchestrator.config import Config, ConfigError, load_config, parse_duration
from orchestrator.context import RunContext
from orchestrator.engine import EXIT_ATTENTION, EXIT_LATER, EXIT_OK
from orchestrator.manifest import ManifestError
from orchestrator.model import Item
from orchestrator.progress import ProgressModel
from orchestrator.report import render_csv, render_json, render_markdown, summarize
from orchestrator.runner import RunRequest, RunSummary, UsageError, execute_run, state_dir_for
from orchestrator.store import StoreError

EXIT_USAGE = 2
EXIT_STORE = 74
EXIT_INTERNAL = 70
PLAIN_PROGRESS_EVERY = 30.0

EPILOG = """exit codes: 0 every item succeeded; 1 failed or rejected items, a blocked tenant or a
failure threshold (someone must look); 2 usage, config or input error (nothing submitted);
70 internal error; 74 the state cannot be saved; 75 lock held or stopped early with work left
(run again later)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _failures(text: str) -> tuple[int | None, float | None]:
    try:
        if text.endswith("%"):
            ratio = float(text[:-1]) / 100
            if not 0 < ratio <= 1:
                raise ValueError
            return None, ratio
        count = int(text)
        if count < 1:
            raise ValueError
        return count, None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a count (e.g. 10) or a percentage of the items (e.g. 5%)"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ims-migrate",
        description="Copy a fleet of Huawei Cloud IMS private images to other regions: "
        "preflight every row, keep each tenant's 5 copy slots busy, resume after any stop.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"ims-migrate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, *, list_required: bool = True) -> None:
        if list_required:
            p.add_argument("list", type=Path, help="migration list (.csv or .jsonl)")
        p.add_argument(
            "--config",
            type=Path,
            help="config file (default: $IMS_MIGRATE_CONFIG, else ./ims-migrate.toml if present)",
        )
        p.add_argument(
            "--state-dir",
            type=Path,
            help="checkpoint folder (default: the list's path without suffix, plus .state)",
        )

    run = sub.add_parser(
        "run",
        help="copy the images of a list (safe to kill and run again)",
        description="Copy every valid row of LIST. Safe to kill at any moment: the next run "
        "picks up where this one stopped and adopts the copies still running in the cloud.",
        epilog=EPILOG,
    )
    common(run)
    run.add_argument(
        "--deadline",
        type=_duration,
        help="stop submitting after this long (90s, 50m, 2h, 1h30m), save, exit 75",
    )
    run.add_argument(
        "--quiet", action="store_true", help="print nothing unless something needs a look (cron)"
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="give failed and rejected items a new attempt (a job still alive is adopted)",
    )
    run.add_argument(
        "--max-failures",
        type=_failures,
        metavar="N|P%",
        help="stop submitting after N failed items (or P%% of the list); running copies are "
        "still followed; exit 1",
    )
    run.add_argument("--tenant", action="append", default=[], help="only this tenant (repeat)")
    run.add_argument("--source-region", action="append", default=[], help="only rows from here")
    run.add_argument("--target-region", action="append", default=[], help="only rows to here")
    run.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="live table on a terminal, plain lines otherwise (default: auto)",
    )

    status = sub.add_parser(
        "status", help="what the checkpoint says (no cloud call)", epilog=EPILOG
    )
    status.add_argument("list", type=Path, nargs="?", help="migration list (or --state-dir)")
    common(status, list_required=False)
    status.add_argument("--format", choices=("table", "json"), default="table")

    report = sub.add_parser("report", help="one row per item: ids, job, times, errors")
    report.add_argument("list", type=Path, nargs="?", help="migration list (or --state-dir)")
    common(report, list_required=False)
    report.add_argument("--format", choices=("csv", "json", "md"), default="csv")
    report.add_argument("--output", type=Path, help="write to this file instead of stdout")

    sim = sub.add_parser(
        "simulator",
        help="serve the embedded IMS simulator on 127.0.0.1",
        description="Serve a fake IMS + IAM for many regions (signature checks, the 5-copy "
        "cap, progressing jobs, fault injection) from a scenario file.",
    )
    sim.add_argument("--scenario", type=Path, help="scenario JSON (default: the demo's)")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sim.add_argument("--port-file", type=Path, help="write the bound port here once listening")

    demo = sub.add_parser(
        "demo",
        help="migrate a generated list against the embedded simulator",
        description="Generate a 60+ image list over 3 tenants and 4 regions (with rows that "
        "must be rejected), serve a simulator, run the migration, print the report and check "
        "the simulator's ground truth. Exit 0 when it all went as expected.",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo-output"),
        help="where to write (default: ./demo-output)",
    )
    demo.add_argument("--seed", type=int, default=7, help="scenario seed (default 7)")
    demo.add_argument("--progress", choices=("auto", "live", "plain", "none"), default="auto")
    return parser


# -- shared helpers ------------------------------------------------------------------------------


def _config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    return load_config(args.config, environ, Path.cwd())


def _state_dir(args: argparse.Namespace) -> Path:
    if args.list is None and args.state_dir is None:
        raise UsageError("give the migration list or --state-dir")
    if args.state_dir is not None:
        return Path(args.state_dir)
    return state_dir_for(Path(args.list), None)


def _load_items(state_dir: Path) -> list[Item]:
    snap = read_snapshot(state_dir)
    if snap is None:
        raise UsageError(f"{state_dir}: no checkpoint here (has `ims-migrate run` been started?)")
    return [item_from_dict(value) for value in snap["items"].values()]


def _summary_table(items: list[Item]) -> Table:
    summary = summarize(items)
    table = Table(title=f"{summary.total} items", title_justify="left")
    table.add_column("tenant")
    for state in ("succeeded", "failed", "rejected", "running", "pending"):
        table.add_column(state, justify="right")
    for tenant, counts in summary.by_tenant.items():
        table.add_row(
            tenant,
            *(str(counts[s]) for s in ("succeeded", "failed", "rejected", "running", "pending")),
        )
    return table


def _problem_lines(items: list[Item]) -> list[str]:
    """One line per failed or rejected item: what, where, and the cloud's or the rule's words."""
    lines = []
    for item in items:
        if item.phase.public not in ("failed", "rejected"):
            continue
        row = item.row
        code = f" {item.error_code}" if item.error_code else ""
        lines.append(
            f"{item.phase.public}{code}: {row.tenant} {row.image_id} "
            f"{row.source_region} -> {row.target_region} (line {row.line}): "
            f"{item.error_message or item.detail}"
        )
    return lines


# -- run -----------------------------------------------------------------------------------------


def _progress_mode(choice: str, quiet: bool, stream: TextIO) -> str:
    if quiet:
        return "none"
    if choice == "auto":
        return "live" if stream.isatty() else "plain"
    return choice


async def _run_with_progress(
    request: RunRequest, mode: str, err: Console, run: Callable[..., Any] = execute_run
) -> RunSummary:
    model: ProgressModel | None = None
    live: Live | None = None
    last_line = [time.monotonic()]

    def on_start(ctx: RunContext, items: list[Item]) -> None:
        nonlocal model, live
        model = ProgressModel(items, ctx.config.max_concurrent_copies)
        if mode == "live":
            live = Live(model.render(), console=err, refresh_per_second=4, transient=False)
            live.start()

    def on_change(item: Item) -> None:
        if model is None:
            return
        model.update(item)
        if live is not None:
            live.update(model.render())
        elif mode == "plain" and time.monotonic() - last_line[0] >= PLAIN_PROGRESS_EVERY:
            last_line[0] = time.monotonic()
            err.print(model.line(), highlight=False, soft_wrap=True)

    try:
        summary: RunSummary = await run(request, on_change=on_change, on_start=on_start)
    finally:
        if live is not None:
            live.stop()
    if model is not None and mode == "plain":
        err.print(model.line(), highlight=False, soft_wrap=True)
    return summary


def _print_run_outcome(summary: RunSummary, quiet: bool, out: Console, err: Console) -> None:
    for problem in summary.problems:
        err.print(str(problem), highlight=False, soft_wrap=True)
    if not quiet:
        for warning in summary.warnings:
            err.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    for tenant, why in summary.blocked.items():
        err.print(
            f"tenant {tenant}: credentials refused ({why.get('code')}: {why.get('message')}); "
            "fix them and run again (the same key is not tried again)",
            highlight=False,
            soft_wrap=True,
        )
    needs_look = summary.exit_code == EXIT_ATTENTION
    if quiet and not needs_look:
        return
    target = err if quiet else out
    listed = [i for i in summary.items if i.listed]
    if not quiet:
        target.print(_summary_table(listed))
    for line in _problem_lines(listed):
        _say(target, line)
    target.print(
        f"exit {summary.exit_code}: {summary.reason}"
        + (" (nothing to do: the list was already finished)" if summary.skipped else ""),
        highlight=False,
        soft_wrap=True,
    )
    target.print(f"report: {summary.state_dir / 'report.csv'}", highlight=False, soft_wrap=True)


def cmd_run(
    args: argparse.Namespace, environ: Mapping[str, str], out: Console, err: Console
) -> int:
    config = _config(args, environ)
    max_failures, ratio = args.max_failures or (None, None)
    request = RunRequest(
        list_path=Path(args.list),
        config=config,
        environ=environ,
        state_dir=args.state_dir,
        deadline_seconds=args.deadline,
        retry_failed=args.retry_failed,
        quiet=args.quiet,
        max_failures=max_failures,
        max_failure_ratio=ratio,
        tenants=frozenset(args.tenant),
        source_regions=frozenset(args.source_region),
        target_regions=frozenset(args.target_region),
    )
    mode = _progress_mode(args.progress, args.quiet, sys.stderr)
    summary = anyio.run(_run_with_progress, request, mode, err)
    _print_run_outcome(summary, args.quiet, out, err)
    return summary.exit_code


# -- status and report ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, out: Console) -> int:
    state_dir = _state_dir(args)
    snap = read_snapshot(state_dir)
    if snap is None:
        raise UsageError(f"{state_dir}: no checkpoint here (has `ims-migrate run` been started?)")
    items = [item_from_dict(value) for value in snap["items"].values()]
    meta = snap.get("meta", {})
    if args.format == "json":
        document = {
            "state_dir": str(state_dir),
            "list": meta.get("list_path"),
            "summary": summarize(items).to_dict(),
            "last_exit": meta.get("last_exit"),
            "last_reason": meta.get("last_reason"),
            "blocked": {t: {k: v for k, v in b.items() if k != "fingerprint"}
                        for t, b in meta.get("blocked", {}).items()},
        }  # fmt: skip
        out.print_json(json.dumps(document))
        return EXIT_OK
    out.print(f"list: {meta.get('list_path', '?')}", highlight=False, soft_wrap=True)
    out.print(_summary_table(items))
    for line in _problem_lines(items):
        _say(out, line)
    for tenant, why in meta.get("blocked", {}).items():
        out.print(f"tenant {tenant} blocked: {why.get('code')}: {why.get('message')}")
    if "last_exit" in meta:
        out.print(f"last run: exit {meta['last_exit']}: {meta.get('last_reason', '')}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    items = _load_items(_state_dir(args))
    if args.format == "csv":
        text = render_csv(items)
    elif args.format == "json":
        text = render_json(items, summarize(items))
    else:
        text = render_markdown(items, summarize(items))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    return EXIT_OK


# -- simulator and demo --------------------------------------------------------------------------


def cmd_simulator(args: argparse.Namespace, err: Console) -> int:
    from orchestrator.simulator.app import run_simulator
    from orchestrator.simulator.scenario import (
        ScenarioError,
        dump_scenario,
        generate_demo_scenario,
    )

    scenario = args.scenario
    if scenario is None:
        scenario = Path("demo-scenario.json")
        dump_scenario(generate_demo_scenario(7)[0], scenario)
        _say(err, f"no --scenario: serving the demo's world (written to {scenario})")
    try:
        anyio.run(run_simulator, scenario, args.host, args.port, args.port_file)
    except (ScenarioError, OSError, ValueError) as exc:
        _say(err, f"ims-migrate simulator: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_demo(
    args: argparse.Namespace, environ: Mapping[str, str], out: Console, err: Console
) -> int:
    from orchestrator.demo import run_demo

    mode = _progress_mode(args.progress, False, sys.stderr)

    async def run(request: RunRequest) -> RunSummary:
        return await _run_with_progress(request, mode, err)

    outcome = anyio.run(lambda: run_demo(args.workdir, seed=args.seed, run=run, environ=environ))
    summary = outcome.summary
    _print_run_outcome(summary, False, out, err)
    truth = outcome.truth
    copies = list(truth["copies"])
    polls = truth["requests"].get("job", 0)
    table = Table(title="demo: what the simulator saw", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("rows in the list", str(len(summary.items) + len(summary.problems)))
    table.add_row("wall time", f"{outcome.elapsed:.1f} s")
    table.add_row("copies made", str(len(copies)))
    table.add_row("job polls per copy", f"{polls / max(1, len(copies)):.1f}")
    table.add_row(
        "max copies in flight per tenant",
        ", ".join(f"{k}={v}" for k, v in sorted(truth["max_in_flight"].items())),
    )
    table.add_row("items submitted twice", str(len(truth["duplicates"])))
    table.add_row("lost replies injected", str(truth["lost_replies"]))
    table.add_row("requests", ", ".join(f"{k}={v}" for k, v in sorted(truth["requests"].items())))
    out.print(table)
    out.print(f"files: {outcome.workdir}", highlight=False, soft_wrap=True)
    if outcome.ok:
        out.print("demo: every valid row succeeded, every planted bad row was rejected, "
                  "at most 5 copies in flight per tenant, no duplicate.")  # fmt: skip
        return EXIT_OK
    for mismatch in outcome.mismatches:
        _say(err, f"demo: {mismatch}")
    return EXIT_ATTENTION


# -- main ----------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    out = Console(file=stdout, soft_wrap=False)
    err = Console(file=stderr, stderr=True)
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args, environ, stdout, out, err)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 -- every failure ends in an exit code
        return _exit_for(exc, err)


def _dispatch(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    stdout: TextIO,
    out: Console,
    err: Console,
) -> int:
    if args.command == "run":
        return cmd_run(args, environ, out, err)
    if args.command == "status":
        return cmd_status(args, out)
    if args.command == "report":
        return cmd_report(args, stdout)
    if args.command == "simulator":
        return cmd_simulator(args, err)
    return cmd_demo(args, environ, out, err)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups of task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _say(err: Console, text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True, markup=False)


def _exit_for(exc: BaseException, err: Console) -> int:
    """Map a failure to its exit code, most severe first, and say what to do."""
    leaves = _leaves(exc)
    usage = [
        e
        for e in leaves
        if isinstance(e, UsageError | ConfigError | ManifestError | CheckpointCorrupt)
    ]
    store = [e for e in leaves if isinstance(e, StoreError)]
    if usage:
        for error in usage:
            _say(err, f"ims-migrate: {error}")
        return EXIT_USAGE
    if store:
        _say(err, f"ims-migrate: {store[0]}")
        return EXIT_STORE
    bugs = [e for e in leaves if not isinstance(e, LockHeld | KeyboardInterrupt)]
    if bugs:
        err.print("".join(traceback.format_exception(bugs[0])), highlight=False, markup=False)
        _say(err, "ims-migrate: internal error (a bug); please report it with the lines above")
        return EXIT_INTERNAL
    lock = [e for e in leaves if isinstance(e, LockHeld)]
    if lock:
        _say(err, f"ims-migrate: another run holds {lock[0]}; try again later")
    return EXIT_LATER


def entrypoint() -> None:
    sys.exit(main())
