"""What the commands share: exit codes, the console helpers, the checkpoint readers."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.commands.common import StoppedAtOnce, UsageError, state_dir_for
from orchestrator.config import Config, ConfigError
from orchestrator.config_file import load_config
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase, PublicState
from orchestrator.core.outcome import is_shown
from orchestrator.ims.proxy import proxy_problem
from orchestrator.logs import EVENTS, KEEP_ROTATED
from orchestrator.manifest import ManifestError
from orchestrator.output.report import explained, summarize, visible
from orchestrator.state.checkpoint import LockHeld, read_snapshot, snapshot_meta
from orchestrator.state.codec import item_from_dict
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import StoreError

EPILOG = """exit codes: 0 every item succeeded; 1 failed or rejected items, a blocked tenant or a
failure threshold (someone must look); 2 usage, config or input error (nothing submitted);
70 internal error; 74 the state cannot be saved; 75 lock held or stopped early with work left
(run again later)."""


# -- shared helpers ------------------------------------------------------------------------------


def config_of(
    args: argparse.Namespace, environ: Mapping[str, str], *, calls: bool = False
) -> Config:
    """The config; for a command that ``calls`` the cloud, also a usable proxy in the
    environment (else exit 2 before any call)."""
    config = load_config(args.config, environ, Path.cwd())
    problem = proxy_problem(environ) if calls else None
    if problem is not None:
        raise ConfigError(problem)
    return config


def state_dir_of(args: argparse.Namespace) -> Path:
    if args.list is None and args.state_dir is None:
        raise UsageError("give the migration list or --state-dir")
    if args.state_dir is not None:
        return Path(args.state_dir)
    return state_dir_for(Path(args.list), None)


def load_state(state_dir: Path) -> tuple[list[Item], RunMeta]:
    """The checkpoint's items and meta, read without the lock; a usage error when absent."""
    snap = read_snapshot(state_dir, item_from_dict)
    if snap is None:
        raise UsageError(f"{state_dir}: no checkpoint here (has `ims-migrate run` been started?)")
    meta = snapshot_meta(snap, state_dir)
    return explained(filter(is_shown, snap["items"].values()), meta.blocked), meta


def load_items(state_dir: Path) -> list[Item]:
    return load_state(state_dir)[0]


TABLE_STATES = (
    PublicState.SUCCEEDED,
    PublicState.FAILED,
    PublicState.REJECTED,
    PublicState.RUNNING,
    PublicState.PENDING,
)  # the columns of the summary table, in this order


def summary_table(items: list[Item], most: int | None = None) -> Table:
    """Counts per tenant. ``most``: at most that many tenants' rows (those with problems or
    work left first, then by name), and a last row saying how many are not shown: a run of
    1,000 tenants ends with a screen, not a scroll (``status`` shows every tenant)."""
    summary = summarize(items)
    table = Table(title=f"{summary.total} items", title_justify="left")
    table.add_column("tenant")
    for state in TABLE_STATES:
        table.add_column(state, justify="right")
    rows = list(summary.by_tenant.items())
    if most is not None and len(rows) > most:
        done = (PublicState.SUCCEEDED,)
        rows.sort(key=lambda row: all(row[1][s] == 0 for s in TABLE_STATES if s not in done))
        hidden = rows[most:]
        rows = rows[:most]
    else:
        hidden = []
    for tenant, counts in rows:
        table.add_row(tenant, *(str(counts[s]) for s in TABLE_STATES))
    if hidden:
        table.add_row(
            f"({len(hidden)} more tenants)",
            *(str(sum(counts[s] for _, counts in hidden)) for s in TABLE_STATES),
        )
    return table


def problem_line(item: Item) -> str:
    """What failed or was rejected, where, and the cloud's or the rule's words."""
    row = item.row
    code = f" {item.error_code}" if item.error_code else ""
    return visible(
        f"{item.phase.public}{code}: {row.tenant} {row.image_id} "
        f"{row.source_region} -> {row.target_region} (line {row.line}): "
        f"{item.error_message or item.detail}"
    )


def problem_lines(items: list[Item]) -> list[str]:
    """One line per failed or rejected item."""
    problems = (Phase.FAILED, Phase.REJECTED)  # public.is_problem, without 100,000 calls
    return [problem_line(i) for i in items if i.phase in problems]


def leaves_of(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups of task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves_of(inner)]
    return [exc]


def say(err: Console, text: str) -> None:
    """One message, as text (no markup), with what the list put in it made visible: a
    right-to-left override from a name must not turn the rest of the line around."""
    err.print(visible(text), highlight=False, soft_wrap=True, markup=False, emoji=False)


USAGE_ERRORS = (UsageError, ConfigError, ManifestError)


def exit_code_of(leaves: Sequence[BaseException]) -> int:
    """The exit code of a failure, most severe first."""
    if any(isinstance(e, USAGE_ERRORS) for e in leaves):
        return ExitCode.USAGE
    if any(isinstance(e, StoreError) for e in leaves):
        return ExitCode.STORE
    if any(not isinstance(e, LockHeld | KeyboardInterrupt | StoppedAtOnce) for e in leaves):
        return ExitCode.INTERNAL
    return ExitCode.LATER


def event_lines(state_dir: Path) -> list[str]:
    """The lines of events.jsonl and its rotated files, oldest first (none if absent)."""
    lines: list[str] = []
    for index in range(KEEP_ROTATED, -1, -1):
        path = state_dir / (EVENTS if index == 0 else f"{EVENTS}.{index}")
        try:
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
    return lines
