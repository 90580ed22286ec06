"""The commands that read and show: ``plan``, ``status``, ``report``, and ``simulator``."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from orchestrator.cli.common import (
    config_of,
    event_lines,
    load_items,
    load_state,
    problem_lines,
    say,
    state_dir_of,
    summary_table,
)
from orchestrator.commands.clouds import Seams
from orchestrator.commands.common import UsageError
from orchestrator.commands.plan import PlanRequest, make_plan
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import look_text, outcome_of, to_look_at
from orchestrator.eventloop import run_loop
from orchestrator.output.plan_output import plan_renderables, render_plan_csv, render_plan_json
from orchestrator.output.report import (
    item_record,
    render_csv,
    render_json,
    render_markdown,
    summarize,
    visible,
)
from orchestrator.output.report_html import render_html
from orchestrator.state.meta import RunMeta

WAITING_SHOWN = 20  # items listed in a "waiting" or "to look at" section (all of them in json)

# -- plan ----------------------------------------------------------------------------------------


def cmd_plan(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    stdout: TextIO,
    out: Console,
    seams: Seams | None = None,
) -> int:
    request = PlanRequest(
        list_path=Path(args.list),
        config=config_of(args, environ, calls=True),
        environ=environ,
        state_dir=args.state_dir,
        tenants=frozenset(args.tenant),
        source_regions=frozenset(args.source_region),
        target_regions=frozenset(args.target_region),
    )
    if request.list_path.is_dir():
        raise UsageError(f"{request.list_path}: is a folder, not a migration list (.csv or .jsonl)")
    if not request.list_path.is_file():
        raise UsageError(f"{request.list_path}: no such file (the migration list)")
    seams = seams or Seams()
    plan = run_loop(partial(make_plan, request, clouds=seams.clouds, clock=seams.clock), environ)
    if args.format == "json":
        stdout.write(render_plan_json(plan))
    elif args.format == "csv":
        stdout.write(render_plan_csv(plan))
    else:
        console = (
            out
            if stdout.isatty()
            else Console(file=stdout, width=160, soft_wrap=False, emoji=False)
        )
        for part in plan_renderables(plan):
            console.print(part)
    return ExitCode.OK if plan.can_go else ExitCode.ATTENTION


# -- status and report ---------------------------------------------------------------------------


def status_exit(items: list[Item], meta: RunMeta) -> ExitCode:
    """How ``status`` exits: like the state it shows (0 every listed item succeeded, 1 something
    needs a look, 75 work left), by the run's own definition (core/outcome.py)."""
    found = outcome_of(items, blocked=meta.blocked, quota_full=(), stop=None, unavailable={})
    return found.code


def waiting(items: list[Item]) -> list[Item]:
    """The items that wait for something other than their copy's progress (a reconciliation,
    a blocked tenant, a full quota): their detail says for what and until when."""
    return [
        item
        for item in items
        if item.listed
        and (item.phase == Phase.RECONCILING or (item.phase == Phase.PENDING and item.detail))
    ]


def status_record(item: Item) -> dict[str, object]:
    record: dict[str, object] = dict(item_record(item))
    record["listed"] = item.listed
    return record


def _section(out: Console, title: str, items: list[Item], why: Callable[[Item], str]) -> None:
    """``title (N):`` then a line per item (at most ``WAITING_SHOWN``): where, and ``why``."""
    if not items:
        return
    say(out, f"{title} ({len(items)}):")
    for item in items[:WAITING_SHOWN]:
        row = item.row
        say(out, visible(f"  {row.tenant} {row.image_id} -> {row.target_region} "
                         f"(line {row.line}): {why(item)}"))  # fmt: skip
    if len(items) > WAITING_SHOWN:
        say(out, f"  ... and {len(items) - WAITING_SHOWN} more (status --format json)")


def cmd_status(args: argparse.Namespace, out: Console) -> int:
    state_dir = state_dir_of(args)
    items, meta = load_state(state_dir)
    code = status_exit(items, meta)
    if args.format == "json":
        document = {
            "state_dir": str(state_dir),
            "list": meta.list_path,
            "summary": summarize(items).to_dict(),
            "last_exit": meta.last_exit,
            "last_reason": meta.last_reason,
            "status_exit": int(code),
            "blocked": {t: {"code": b.code, "message": b.message, "at": b.at}
                        for t, b in meta.blocked.items()},
            # every item not succeeded, with its list line and why (the report's columns)
            "items": [status_record(item) for item in items
                      if item.phase != Phase.SUCCEEDED],
            # copied, but the copy differs or a step after it was not done (run's exit 1)
            "to_look_at": [status_record(item) for item in to_look_at(items)],
        }  # fmt: skip
        out.print_json(json.dumps(document))
        return code
    listed = "?" if meta.list_path is None else meta.list_path
    out.print(f"list: {listed}", highlight=False, soft_wrap=True)
    out.print(summary_table(items))
    for line in problem_lines(items):
        say(out, line)
    _section(out, "copied, to look at", to_look_at(items), look_text)
    _section(out, "waiting", waiting(items), lambda item: item.detail)
    for tenant, why in meta.blocked.items():
        say(
            out,
            f"tenant {tenant} blocked: credentials refused ({why.code}: "
            f"{why.message}); fix them, then run again",
        )
    if meta.last_exit is not None:
        say(out, f"last run: exit {meta.last_exit}: {meta.last_reason or ''}")
    return code


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    state_dir = state_dir_of(args)
    if args.format == "html":
        items, meta = load_state(state_dir)
        text = render_html(items, meta, generated_at=time.time(), events=event_lines(state_dir))
    else:
        items = load_items(state_dir)
        if args.format == "csv":
            text = render_csv(items)
        elif args.format == "json":
            text = render_json(items, summarize(items))
        else:
            text = render_markdown(items, summarize(items))
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"--output {args.output}: cannot write the report ({exc.strerror or exc})"
            ) from exc
    else:
        out.write(text)
    return ExitCode.OK


# -- simulator and demo --------------------------------------------------------------------------


def cmd_simulator(
    args: argparse.Namespace, environ: Mapping[str, str], out: Console, err: Console
) -> int:
    from orchestrator.commands.demo import rehearsal_config
    from orchestrator.simulator.app import run_simulator
    from orchestrator.simulator.scenario import ScenarioError, generate_demo_scenario

    try:
        if args.scenario is None:  # the demo's world, kept in memory: nothing written here
            scenario: dict[str, Any] = generate_demo_scenario(7)[0]
            say(err, "no --scenario: serving the demo's world (3 accounts, 4 regions)")
        else:
            scenario = json.loads(Path(args.scenario).read_text(encoding="utf-8"))
            if not isinstance(scenario, dict) or not isinstance(scenario.get("accounts"), list):
                raise ScenarioError(f"{args.scenario}: a scenario is a JSON object with accounts")
    except (OSError, ValueError) as exc:
        say(err, f"ims-migrate simulator: {args.scenario}: cannot read the scenario: {exc}")
        return ExitCode.USAGE

    def ready(port: int) -> None:
        try:
            config, env = rehearsal_config(scenario, port)
        except (KeyError, TypeError) as exc:  # a hand-written scenario: serve it all the same
            say(err, f"no rehearsal config: an account of the scenario lacks {exc}")
            return
        exports = "".join(f"export {name}={value}\n" for name, value in sorted(env.items()))
        if args.config_out is not None:
            Path(args.config_out).write_text(config, encoding="utf-8")
            say(out, f"# config written to {args.config_out}")
        else:
            out.print(config, highlight=False, markup=False, soft_wrap=True)
        say(out, "# the simulated accounts' keys (fake, for this simulator only):")
        out.print(exports.rstrip("\n"), highlight=False, markup=False, soft_wrap=True)
        config_name = args.config_out or "ims-migrate.toml"
        say(out, f"# then: ims-migrate discover --source-region cn-north-4 --target-region "
                 f"cn-east-3 --config {config_name} --output rehearsal.csv; "
                 f"ims-migrate run rehearsal.csv --config {config_name}")  # fmt: skip
        say(err, f"simulator listening on http://{args.host}:{port} (Ctrl-C stops it)")
        with contextlib.suppress(OSError, ValueError):
            out.file.flush()

    try:
        run_loop(
            partial(run_simulator, scenario, args.host, args.port, args.port_file, ready), environ
        )
    except (ScenarioError, OSError, ValueError) as exc:
        say(err, f"ims-migrate simulator: {exc}")
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK
