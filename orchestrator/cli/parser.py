"""argv -> an argparse namespace: every command and option, with its help."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.cli.cleanup import add_cleanup
from orchestrator.cli.common import EPILOG
from orchestrator.config import parse_duration
from orchestrator.core.discovery import OS_TYPES, parse_tag, parse_time
from orchestrator.core.exits import ExitCode
from orchestrator.output.metrics import METRICS_EVERY


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _state_dir(text: str) -> Path:
    """--state-dir: an empty value would be the current folder, silently: refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty; give a folder (or leave --state-dir out for the list's own)"
        )
    return Path(text)


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
            type=_state_dir,
            help="checkpoint folder (default: the list's path without suffix, plus .state)",
        )

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", action="append", default=[], help="only this tenant (repeat)")
        p.add_argument(
            "--source-region", action="append", default=[], help="only rows from here (repeat)"
        )
        p.add_argument(
            "--target-region", action="append", default=[], help="only rows to here (repeat)"
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
        "--repair-state",
        action="store_true",
        help="a damaged checkpoint or journal (exit 74) is renamed aside (never deleted) and the "
        "state rebuilt from the list; copies already made are found by their tokens and adopted",
    )
    run.add_argument(
        "--max-failures",
        type=_failures,
        metavar="N|P%",
        help="stop submitting after N failed items (or P%% of the list); running copies are "
        "still followed; exit 1",
    )
    filters(run)
    run.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="live table on a terminal, plain lines on stderr otherwise (default: auto); "
        "--quiet shows none",
    )
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics here (node_exporter textfile collector, e.g. "
        "/var/lib/node_exporter/ims-migrate.prom) at the start, every "
        f"{METRICS_EVERY:.0f} s and at the end of the run",
    )

    plan = sub.add_parser(
        "plan",
        help="what a run would do with LIST (read-only: nothing is copied)",
        description="Look every row up in the cloud (read-only) and say what a run would do: "
        "copy it, adopt the copy already in the target, or reject it and why; a summary by "
        "tenant and target region, the target quotas, and an estimate of the time the list "
        "takes.",
        epilog="exit codes: 0 every row can go; 1 some cannot (rejected, failed, blocked "
        "tenant, target quota too small); 2 usage, config or input error.",
    )
    common(plan)
    plan.add_argument("--format", choices=("table", "csv", "json"), default="table")
    filters(plan)

    status = sub.add_parser(
        "status",
        help="what the checkpoint says (no cloud call)",
        description="Show what the state dir's checkpoint says, without calling the cloud: the "
        "items by tenant and state, every failed or rejected row with its line and why, the "
        "copies to look at (a verify mismatch, a step after the copy not done) and what, the "
        "items waiting and for what, blocked tenants, and how the last run ended (its stored "
        "exit code and reason). --format json gives the same as one JSON object, with one "
        "object per item that has not succeeded and one per copy to look at (to_look_at).",
        epilog=STATUS_EPILOG,
    )
    status.add_argument("list", type=Path, nargs="?", help="migration list (or --state-dir)")
    common(status, list_required=False)
    status.add_argument("--format", choices=("table", "json"), default="table")

    report = sub.add_parser(
        "report",
        help="one row per item: ids, job, times, errors (csv, json, md or html)",
        description="Write the checkpoint as a report (no cloud call). html is one "
        "self-contained file: the summary, a timeline of each tenant's copy slots, and the "
        "failures with their codes and messages.",
    )
    report.add_argument("list", type=Path, nargs="?", help="migration list (or --state-dir)")
    common(report, list_required=False)
    report.add_argument("--format", choices=("csv", "json", "md", "html"), default="csv")
    report.add_argument("--output", type=Path, help="write to this file instead of stdout")

    _add_discover(sub)
    add_cleanup(sub)

    sim = sub.add_parser(
        "simulator",
        help="serve the embedded IMS simulator on 127.0.0.1",
        description="Serve a fake IMS + IAM for many regions (signature checks, the 5-copy "
        "cap, progressing jobs, fault injection) from a scenario file (default: the demo's "
        "world, kept in memory). Once listening it prints a ready config (endpoints and "
        "timings that suit its accelerated clock) and the export lines of its accounts' "
        "keys, so that discover, plan and run can rehearse against it; it writes no file "
        "unless told (--config-out, --port-file).",
    )
    sim.add_argument("--scenario", type=Path, help="scenario JSON (default: the demo's)")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sim.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    sim.add_argument(
        "--config-out",
        type=Path,
        metavar="FILE",
        help="write the rehearsal config here instead of printing it (the accounts' key "
        "variables are printed either way)",
    )

    demo = sub.add_parser(
        "demo",
        help="discover a generated fleet in the embedded simulator and migrate it",
        description="Generate a fleet of ~70 images over 3 tenants and 4 regions, serve a "
        "simulator, build the list with discover (2 source regions to 2 targets), append rows "
        "that must be rejected, run the migration, print the report and check the "
        "simulator's ground truth. Exit 0 when it all went as expected.",
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


STATUS_EPILOG = """exit codes of status (the state it shows, not the last run's code): 0 every
listed item succeeded; 1 something needs a look (failed or rejected items, a blocked tenant);
2 usage error (no checkpoint in the state dir); 75 work left (items pending or in flight): run
again later."""

DISCOVER_EPILOG = """\
One row per (tenant, private image of a source region, target region), with name,
description and vault_id empty (the defaults apply), sorted by tenant, source region,
creation time and id. An image run would reject (encrypted, ISO, over its region's size
limit, not active, full-ECS without a vault_id) is left out and counted by reason;
--include-ineligible writes those too, so run rejects them visibly. Copies made by
ims-migrate are never listed. Read-only: no copy, no state dir, no lock.

From cron, follow a fleet that is still growing:
  ims-migrate discover --source-region cn-north-4 --target-region cn-east-3 \\
      --append fleet.csv --quiet
  ims-migrate run fleet.csv --deadline 50m --quiet

exit codes: 0 the list was written (or had every row already); 1 a tenant or region
could not be listed (named on stderr; the others were written); 2 usage or config error
(nothing written)."""


def _tag(text: str) -> tuple[str, str]:
    try:
        return parse_tag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an ISO 8601 time, e.g. 2026-01-31 or 2026-01-31T10:00:00Z"
        ) from None


def _add_discover(sub: Any) -> None:
    p = sub.add_parser(
        "discover",
        help="write the migration list from what the cloud holds (read-only)",
        description="List the private images of each tenant in the source regions (paged,\n"
        "500 a page, with the API's own filters where they mean the same), keep those that\n"
        "match the filters and that run would accept, and write one row per target region\n"
        "to a new list (--output) or add the rows a list lacks (--append).",
        epilog=DISCOVER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source-region",
        action="append",
        required=True,
        metavar="R",
        help="list the images of this region (repeat)",
    )
    p.add_argument(
        "--target-region",
        action="append",
        required=True,
        metavar="T",
        help="copy them to this region: one row per target (repeat)",
    )
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this tenant of the config (repeat; default: every tenant)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="config file (default: $IMS_MIGRATE_CONFIG, else ./ims-migrate.toml)",
    )
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="GLOB",
        help="only images whose name matches this shell glob (repeat: any of them)",
    )
    p.add_argument(
        "--exclude-name",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out images whose name matches this shell glob (repeat)",
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_tag,
        metavar="KEY=VALUE",
        help="only images carrying this tag (repeat: all of them)",
    )
    p.add_argument(
        "--enterprise-project",
        metavar="ID",
        help="only images of this enterprise project (0 is the default project)",
    )
    p.add_argument(
        "--created-after",
        type=_time,
        metavar="TIME",
        help="only images created at or after this ISO 8601 time (UTC if no zone)",
    )
    p.add_argument(
        "--created-before",
        type=_time,
        metavar="TIME",
        help="only images created before this ISO 8601 time (UTC if no zone)",
    )
    p.add_argument("--os-type", choices=OS_TYPES, help="only Linux or only Windows images")
    p.add_argument(
        "--include-ineligible",
        action="store_true",
        help="write the images run would reject too (it then rejects them visibly)",
    )
    p.add_argument(
        "--skipped",
        type=Path,
        metavar="FILE",
        help="write what was left out, with the reason, to this CSV file",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output", type=Path, metavar="LIST", help="write a new list (an existing file is refused)"
    )
    where.add_argument(
        "--append",
        type=Path,
        metavar="LIST",
        help="add the rows LIST lacks (by tenant, image_id, target_region), "
        "keeping its lines as they are; created when absent",
    )
    p.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        help="the list's format (default and required: its suffix)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="print nothing unless something needs a look (cron)"
    )
