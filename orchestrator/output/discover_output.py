"""A discovery as people read it: the summary table and the closing lines. Pure values.

The rich renderables are drawn by the CLI (the only module that prints).
"""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from orchestrator.commands.discover import DiscoverResult, Progress, Tally

REASON_WORDS = {
    "not_active": "not active",
    "too_large": "too large",
    "whole_image_needs_vault": "full-ECS, needs vault_id",
    "name_invalid": "name unusable",
    "same_region": "source = target",
    "made_by_ims_migrate": "ims-migrate's copy",
    "windows": "Windows",
}


def reason_words(code: str) -> str:
    return REASON_WORDS.get(code, code)


def progress_line(progress: Progress) -> str:
    where = f"{progress.tenant} {progress.region}"
    if progress.error:
        return f"{where}: {progress.error}"
    if progress.found is None:
        return f"{where}: listing private images..."
    return f"{where}: {progress.found} private image{'s' if progress.found != 1 else ''}"


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


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason_words(code)} {n}" for code, n in sorted(counter.items()) if n)


ROWS_ARE = "one per image and target region"


def discover_table(result: DiscoverResult) -> Table:
    """One row per tenant and source region: images found and not matching the filters; rows
    listed, already in the list, left out by reason and flagged (an image gives one row per
    target region, so rows and images are not comparable: each header says its unit)."""
    targets = f"{result.targets} target region{'s' if result.targets != 1 else ''}"
    table = Table(
        title=f"discover -> {result.list_path}",
        title_justify="left",
        caption=f"rows: {ROWS_ARE} ({targets})",
        caption_justify="left",
    )
    table.add_column("tenant")
    table.add_column("source region")
    for column in ("images\nfound", "images\nnot matching", "rows\nlisted",
                   "rows already\nin list", "rows\nleft out"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_column("rows left out,\nby reason")
    table.add_column("rows listed,\nflagged")
    tallies = [*result.tallies, _total(result.tallies)] if len(result.tallies) > 1 else []
    for tally in tallies or result.tallies:
        if tally.error:
            table.add_row(tally.tenant, tally.region, "[red]not listed[/red]", "", "", "", "",
                          tally.error.partition(":")[0] + " (see below)", "")  # fmt: skip
            continue
        table.add_row(
            tally.tenant,
            tally.region,
            str(tally.found),
            str(tally.not_matching),
            str(tally.listed),
            str(tally.already),
            str(sum(tally.left_out.values())),
            _counts(tally.left_out),
            _counts(tally.flagged),
        )
    return table


def failure_lines(result: DiscoverResult) -> list[str]:
    """One line per tenant and reason it could not be listed, naming the regions concerned."""
    regions: dict[tuple[str, str], list[str]] = {}
    for tally in result.failures:
        regions.setdefault((tally.tenant, tally.error), []).append(tally.region)
    return [
        f"ims-migrate discover: tenant {tenant} ({', '.join(where)}) not listed: {error}"
        for (tenant, error), where in regions.items()
    ]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _in_words(total: Tally, targets: int) -> str:
    """Images and rows, each named: how the images found became the rows counted."""
    matching = total.found - total.not_matching
    rows = total.listed + total.already + sum(total.left_out.values())
    return (
        f"{_plural(total.found, 'image')} found, {total.not_matching} not matching the filters; "
        f"{_plural(matching, 'image')} x {_plural(targets, 'target region')} = "
        f"{_plural(rows, 'row')}: {total.listed} listed, {total.already} already in the list, "
        f"{sum(total.left_out.values())} left out"
    )


def closing_lines(result: DiscoverResult, *, appended: bool) -> list[str]:
    """What was written where, in words."""
    added = len(result.added)
    if not result.wrote:
        already = sum(tally.already for tally in result.tallies)
        return [f"{result.list_path}: nothing new to add ({already} row(s) already in it); "
                "left as it was"]  # fmt: skip
    verb = "added to" if appended else "written to"
    lines = [
        _in_words(_total(result.tallies), result.targets),
        f"{added} row{'s' if added != 1 else ''} ({ROWS_ARE}) {verb} {result.list_path}",
    ]
    if result.flagged:
        lines.append(
            f"{len(result.flagged)} listed row(s) flagged as run flags them (a Windows image may "
            "be refused by the cloud; with --include-ineligible, run rejects the ineligible)"
        )
    return lines
