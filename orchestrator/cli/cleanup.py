"""``ims-migrate cleanup (LIST | --state-dir DIR) [--yes]``: show, then delete, the leftovers."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from orchestrator.cli.common import config_of, load_state, say, state_dir_of
from orchestrator.commands.clouds import Seams
from orchestrator.core.exits import ExitCode
from orchestrator.eventloop import run_loop
from orchestrator.state.checkpoint import LOCK, LockHeld, acquire_lock, release_lock

if TYPE_CHECKING:  # the command's own module: imported when it runs (the parser imports this one)
    from orchestrator.commands.cleanup import Cleanup

CLEANUP_HELP = "list (and with --yes delete) the broken copies and duplicates in the targets"
CLEANUP_DESCRIPTION = (
    "A failed cross-region copy can leave a `killed` image in the target region, which counts "
    "against its private-image quota. cleanup lists every target image that carries the token "
    "of an item of the state dir (ims-migrate writes it in each copy's description) and is not "
    "that item's copy: killed or failed leftovers, and duplicates if any ever occurred. An "
    "image without this tool's token is never touched; a live image of an item not yet copied "
    "is kept (a run adopts it). Without --yes nothing is deleted."
)
CLEANUP_EPILOG = (
    "exit codes: 0 nothing is left to clean up (none found, or all deleted); 1 leftovers are "
    "left (shown without --yes, or could not be deleted, or a target could not be listed); "
    "2 usage or config error (no checkpoint, a tenant's credentials missing); 75 with --yes, "
    "a run holds the state dir's lock: nothing deleted, try again when it ends."
)


def add_cleanup(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup", help=CLEANUP_HELP, description=CLEANUP_DESCRIPTION, epilog=CLEANUP_EPILOG
    )
    p.add_argument("list", type=Path, nargs="?", help="migration list (or --state-dir)")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="checkpoint folder (default: the list's path without suffix, plus .state)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="config file (default: $IMS_MIGRATE_CONFIG, else ./ims-migrate.toml if present)",
    )
    p.add_argument("--yes", action="store_true", help="delete them (DELETE, then wait until gone)")


def cmd_cleanup(
    args: argparse.Namespace, environ: Mapping[str, str], out: Console, err: Console, seams: Seams
) -> int:
    from orchestrator.commands.cleanup import clean_up

    state_dir = state_dir_of(args)
    items, _ = load_state(state_dir)
    config = config_of(args, environ, calls=True)
    lock = None
    if args.yes:  # deletes only under the state dir's lock: never while a run goes on
        try:
            lock = acquire_lock(state_dir)
        except LockHeld:
            say(err, held_words(state_dir / LOCK))
            return ExitCode.LATER
    try:
        if lock is not None:
            items, _ = load_state(state_dir)  # as the last run left it
        result = run_loop(
            partial(
                clean_up,
                config,
                environ,
                items,
                yes=args.yes,
                clouds=seams.clouds,
                clock=seams.clock,
            ),
            environ,
        )
    finally:
        if lock is not None:
            release_lock(lock)
    show(out, result, yes=args.yes)
    return ExitCode.OK if result.left == 0 else ExitCode.ATTENTION


def held_words(lock: Path) -> str:
    """cleanup --yes refused: who holds the lock, and what to do."""
    from orchestrator.commands.cleanup import lock_holder

    pid = lock_holder(lock)
    who = f"a run (pid {pid})" if pid is not None else "another run"
    return (
        f"ims-migrate: {who} holds {lock}: cleanup --yes deletes nothing while it goes on; "
        "try again when it ends (`cleanup` without --yes only shows, and works meanwhile)"
    )


def show(out: Console, result: Cleanup, *, yes: bool) -> None:
    for (tenant, region, project), why in sorted(result.unlisted.items()):
        say(out, f"could not list {tenant} {region} ({project}): {why}")
    if not result.found:
        say(out, "no leftover found in the target regions")
        return
    say(out, f"leftovers in the target regions ({len(result.found)}):")
    say(out, "  line  tenant  target_region  image_id  status  name  why")
    for left in result.found:
        row, image = left.item.row, left.image
        done = ""
        if image.id in result.deleted:
            done = "  -> deleted"
        elif image.id in result.not_deleted:
            done = f"  -> NOT deleted: {result.not_deleted[image.id]}"
        say(
            out,
            f"  {row.line}  {row.tenant}  {row.target_region}  {image.id}  {image.status}  "
            f"{image.name!r}  {left.why}{done}",
        )
    if not yes:
        say(out, f"nothing deleted: run again with --yes to delete these {len(result.found)}")
    else:
        say(out, f"deleted {len(result.deleted)}, not deleted {len(result.not_deleted)}")
