"""argv -> commands. The only package that prints, reads argv or exits.

``parser`` turns argv into a namespace; ``run`` runs a list (progress, metrics, the closing
words); ``views`` plans, shows and reports; ``common`` holds what they share. ``main`` is
callable from tests; ``entrypoint`` only wraps it.

Exit codes (most severe first): 2 usage, config or input error (nothing submitted); 74 the
state cannot be saved; 70 internal error (a bug); 1 failed or rejected items, a blocked tenant
or a failure threshold reached; 75 lock held, or stopped early with work left (deadline,
signal, outage): run again later; 0 every item succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import TextIO

from rich.console import Console

from orchestrator import logs
from orchestrator.cli.common import (
    USAGE_ERRORS,
    exit_code_of,
    leaves_of,
    say,
)
from orchestrator.cli.output import OutputClosed, OutputFailed, guarded, silence_stdout
from orchestrator.cli.parser import build_parser
from orchestrator.cli.run import cmd_demo, cmd_run
from orchestrator.clock import Clock
from orchestrator.commands.clouds import CloudFactory, Seams, open_clouds
from orchestrator.commands.common import StoppedAtOnce
from orchestrator.core.advice import next_step
from orchestrator.core.exits import ExitCode
from orchestrator.state.checkpoint import LockHeld, LockLost
from orchestrator.state.store import StoreError

__all__ = ["build_parser", "entrypoint", "main"]

# -- main ----------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    clouds: CloudFactory = open_clouds,
    clock: Clock | None = None,
) -> int:
    """Run the command ``argv`` names; its exit code. ``clouds`` and ``clock`` are the seams
    ``run`` and ``plan`` talk through (tests pass the in-memory cloud and virtual time)."""
    environ = os.environ if environ is None else environ
    real = stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command in ("status", "report"):  # a full disk or a closed pipe is not a bug
        stdout = guarded(stdout)
    out = Console(file=stdout, soft_wrap=False, emoji=False)
    err = Console(file=stderr, stderr=True, emoji=False)
    logs.configure()  # once: a run sends its events to its state dir's events.jsonl
    try:
        code = _dispatch(args, environ, stdout, out, err, Seams(clouds, clock))
        stdout.flush()  # a failure to write is this command's, not the interpreter's exit
        return code
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 -- every failure ends in an exit code
        if isinstance(exc, OutputClosed | OutputFailed):
            silence_stdout(real)
        if isinstance(exc, OutputClosed):
            return ExitCode.OK  # the reader had enough (``| head``): as head users expect
        return _exit_for(exc, err, quiet=bool(getattr(args, "quiet", False)))


def _dispatch(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    stdout: TextIO,
    out: Console,
    err: Console,
    seams: Seams,
) -> int:
    if args.command == "run":
        return cmd_run(args, environ, out, err, seams)
    # The other commands' modules, imported only for them: a resumed run's first poll waits for
    # every import (the run imports what it needs itself).
    from orchestrator.cli.cleanup import cmd_cleanup
    from orchestrator.cli.discover import cmd_discover
    from orchestrator.cli.views import cmd_plan, cmd_report, cmd_simulator, cmd_status

    if args.command == "plan":
        return cmd_plan(args, environ, stdout, out, seams)
    if args.command == "status":
        return cmd_status(args, out)
    if args.command == "report":
        return cmd_report(args, stdout)
    if args.command == "discover":
        return cmd_discover(args, environ, out, err, seams)
    if args.command == "cleanup":
        return cmd_cleanup(args, environ, out, err, seams)
    if args.command == "simulator":
        return cmd_simulator(args, environ, out, err)
    return cmd_demo(args, environ, out, err)


def _exit_for(exc: BaseException, err: Console, *, quiet: bool = False) -> int:
    """Map a failure to its exit code and say what to do. With ``quiet``, "run again later"
    (the lock is held, an interrupt) says nothing: cron mails only what needs a look."""
    leaves = leaves_of(exc)
    code = exit_code_of(leaves)
    if code == ExitCode.USAGE:
        for error in leaves:
            if isinstance(error, USAGE_ERRORS):
                say(err, f"ims-migrate: {error}")
    elif code == ExitCode.STORE:
        say(err, f"ims-migrate: {next(e for e in leaves if isinstance(e, StoreError))}")
    elif code == ExitCode.INTERNAL:
        bug = next(
            e for e in leaves if not isinstance(e, LockHeld | KeyboardInterrupt | StoppedAtOnce)
        )
        err.print("".join(traceback.format_exception(bug)), highlight=False, markup=False)
        say(err, "ims-migrate: internal error (a bug); please report it with the lines above")
    elif lost := [e for e in leaves if isinstance(e, LockLost)]:  # said even with --quiet
        say(err, f"ims-migrate: {lost[0]}; {next_step(ExitCode.LATER)}")
    elif not quiet:
        lock = [e for e in leaves if isinstance(e, LockHeld)]
        if lock:
            say(err, f"ims-migrate: another run holds {lock[0]}; {next_step(ExitCode.LATER)}")
        elif stopped := [e for e in leaves if isinstance(e, StoppedAtOnce)]:
            say(err, f"ims-migrate: {stopped[0]}; {next_step(ExitCode.LATER)}")
    return code


def entrypoint() -> None:
    sys.exit(main())
