"""A discovery as people read it: the summary table and the closing lines. Pure values.

The rich renderables are drawn by the CLI (the only module that prints).
"""

from __future__ import annotations

from rich.table import Table

from orchestrator.commands.discover import DiscoverResult, Progress, Tally

REASON_WORDS = {
    "not_active": "not active",
    "encrypted": "encrypted",
    "iso": "ISO image",
    "too_large": "over the size limit",
    "whole_image_needs_vault": "full-ECS: needs vault_id in the target",
    "name_invalid": "name unusable for the copy",
    "same_region": "source = target",
    "made_by_ims_migrate": "copy made by ims-migrate",
    "windows": "Windows (run warns)",
}


def reason_words(code: str) -> str:
    return REASON_WORDS.get(code, code)


def progress_line(progress: Progress) -> str:
    where = f"{progress.tenant} {progress.region}"
    if progress.error:
        return f"{where}: {progress.error}"
    if progress.found is None:
        return f"{where}: listing private images..."
    return f"{where}: {progress.found} private images"


def _total(tallies: list[Tally]) -> Tally:
    total = Tally("total", "")
    for tally in tallies:
        total.found += tally.found
        total.not_matching += tally.not_matching
        total.listed += tally.listed
        total.already += tally.already
        total.left_out.update(tally.left_out)
        total.flagged.update(tally.flagged)
    return total


def summary_table(result: DiscoverResult) -> Table:
    """One row per tenant and source region: found, listed, already in the list, left out by
    reason (rows; an image gives one row per target region), flagged."""
    reasons = sorted({code for tally in result.tallies for code in tally.left_out})
    flags = sorted({code for tally in result.tallies for code in tally.flagged})
    table = Table(title=f"discover -> {result.list_path}", title_justify="left")
    for column in ("tenant", "source region"):
        table.add_column(column)
    for column in ("images found", "not matching", "rows listed", "already in list"):
        table.add_column(column, justify="right")
    for code in reasons:
        table.add_column(f"left out: {reason_words(code)}", justify="right")
    for code in flags:
        table.add_column(f"listed, flagged: {reason_words(code)}", justify="right")
    tallies = [*result.tallies, _total(result.tallies)] if len(result.tallies) > 1 else []
    for tally in tallies or result.tallies:
        if tally.error:
            table.add_row(tally.tenant, tally.region, "[red]not listed[/red]", *[""] * (
                3 + len(reasons) + len(flags)))  # fmt: skip
            continue
        table.add_row(
            tally.tenant,
            tally.region,
            str(tally.found),
            str(tally.not_matching),
            str(tally.listed),
            str(tally.already),
            *(str(tally.left_out[code]) for code in reasons),
            *(str(tally.flagged[code]) for code in flags),
        )
    return table


def closing_lines(result: DiscoverResult, *, appended: bool) -> list[str]:
    """What was written where, in words."""
    added = len(result.added)
    if not result.wrote:
        return [f"{result.list_path}: every row is already in the list; nothing written"]
    verb = "added to" if appended else "written to"
    lines = [f"{added} row{'s' if added != 1 else ''} {verb} {result.list_path}"]
    if result.flagged:
        lines.append(
            f"{len(result.flagged)} listed row(s) carry a warning run repeats (Windows images "
            "may be refused by the cloud; ineligible rows are rejected by run)"
        )
    return lines
