"""``ims-migrate discover``: argv -> a discovery, its progress on a terminal, its summary."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from orchestrator.cli.common import config_of, say
from orchestrator.commands.clouds import Seams
from orchestrator.commands.discover import DiscoverRequest, DiscoverResult, Progress, discover
from orchestrator.core.discovery import Filters
from orchestrator.eventloop import run_loop
from orchestrator.output.discover_output import (
    closing_lines,
    discover_table,
    failure_lines,
    progress_line,
)


def request_of(args: argparse.Namespace, environ: Mapping[str, str]) -> DiscoverRequest:
    appended = args.append is not None
    return DiscoverRequest(
        config=config_of(args, environ, calls=True),
        environ=environ,
        source_regions=tuple(dict.fromkeys(args.source_region)),
        target_regions=tuple(dict.fromkeys(args.target_region)),
        list_path=Path(args.append if appended else args.output),
        append=appended,
        tenants=tuple(dict.fromkeys(args.tenant)),
        filters=Filters(
            names=tuple(args.name),
            exclude_names=tuple(args.exclude_name),
            tags=tuple(args.tag),
            enterprise_project=args.enterprise_project,
            created_after=args.created_after,
            created_before=args.created_before,
            os_type=args.os_type,
        ),
        include_ineligible=args.include_ineligible,
        fmt=args.format,
        skipped_path=args.skipped,
    )


def cmd_discover(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: Console,
    err: Console,
    seams: Seams,
) -> int:
    request = request_of(args, environ)
    live = err.is_terminal and not args.quiet

    def on_progress(progress: Progress) -> None:
        if live and not progress.error:
            say(err, progress_line(progress))

    result = run_loop(
        lambda: discover(request, clouds=seams.clouds, clock=seams.clock, on_progress=on_progress),
        environ,
    )
    if not args.quiet:
        print_discovery(result, out, appended=request.append)
    for line in failure_lines(result):  # even with --quiet: someone must look
        say(err, line)
        if request.skipped_path is not None:
            say(out, f"left out: {len(result.left_out)} row(s), written to {request.skipped_path}")
    return result.exit_code


def print_discovery(result: DiscoverResult, out: Console, *, appended: bool) -> None:
    """The summary table (wide when not on a terminal: mail and logs do not wrap) and what was
    written where."""
    wide = (
        out if out.is_terminal else Console(file=out.file, width=160, soft_wrap=False, emoji=False)
    )
    wide.print(discover_table(result))
    for line in closing_lines(result, appended=appended):
        say(out, line)
