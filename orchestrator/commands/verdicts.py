"""The plan's values and its verdicts, pure: what a row's verdict is and why, in words.

``plan.py`` asks the cloud and the checkpoint; this module turns what they said into a
:class:`Plan` (rows, quotas, the estimate) that ``output/plan_output.py`` shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.core.estimate import AccountEstimate, Speed, speed_from_samples
from orchestrator.core.model import DEFAULT_TENANT, Item, Phase
from orchestrator.manifest import Manifest


class Verdict(StrEnum):
    COPY = "copy"
    PRESENT = "present"
    DONE = "done"
    IN_FLIGHT = "in flight"
    REJECTED = "rejected"
    FAILED = "failed"
    BLOCKED = "blocked"
    UNCHECKED = "unchecked"

    @property
    def can_go(self) -> bool:
        """Whether the row ends up copied (or already is) without anyone doing anything."""
        return self in (Verdict.COPY, Verdict.PRESENT, Verdict.DONE, Verdict.IN_FLIGHT)


VERDICTS = tuple(Verdict)


@dataclass(frozen=True)
class PlanRow:
    line: int
    verdict: Verdict
    reason: str = ""
    code: str = ""
    tenant: str = ""
    image_id: str = ""
    source_region: str = ""
    target_region: str = ""
    name: str = ""
    size_bytes: int | None = None
    expected_seconds: float | None = None  # one copy's duration, for rows to copy
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaCheck:
    tenant: str
    region: str
    project: str
    adds: int
    used: int | None = None
    quota: int | None = None
    error: str = ""

    @property
    def free(self) -> int | None:
        return None if self.used is None or self.quota is None else self.quota - self.used

    @property
    def enough(self) -> bool | None:
        """Whether the copies fit; None when the quota could not be read."""
        return None if self.free is None else self.free >= self.adds


@dataclass
class Plan:
    list_path: Path
    state_dir: Path
    slots: int
    rows: list[PlanRow] = field(default_factory=list)
    quotas: list[QuotaCheck] = field(default_factory=list)
    speed: Speed = field(default_factory=lambda: speed_from_samples([]))
    accounts: list[AccountEstimate] = field(default_factory=list)
    tenant_notes: dict[str, str] = field(default_factory=dict)
    not_listed: int = 0  # items of the checkpoint whose row left the list

    @property
    def quota_short(self) -> list[QuotaCheck]:
        return [check for check in self.quotas if check.enough is False]

    @property
    def can_go(self) -> bool:
        """Every row can go and every target has room: ``plan`` exits 0."""
        return all(row.verdict.can_go for row in self.rows) and not self.quota_short

    @property
    def seconds(self) -> float:
        """Accounts work side by side: the list takes as long as the slowest account."""
        return max((account.seconds for account in self.accounts), default=0.0)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((v.value for v in VERDICTS), 0)
        for row in self.rows:
            out[row.verdict.value] += 1
        return out

    def by(self, key: str) -> dict[str, dict[str, int]]:
        """Verdict counts per tenant (``key="tenant"``) or per target region, plus bytes to copy."""
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            group = getattr(row, key) or "(bad row)"
            counts = out.setdefault(group, {**dict.fromkeys((v.value for v in VERDICTS), 0)})
            counts[row.verdict.value] += 1
            counts["copy_bytes"] = counts.get("copy_bytes", 0) + (
                row.size_bytes or 0 if row.verdict == Verdict.COPY else 0
            )
        return dict(sorted(out.items()))


# -- verdicts ------------------------------------------------------------------------------------

RETRY_HINT = "`ims-migrate run --retry-failed` gives it a new attempt"


def verdict_of(item: Item, *, judged_now: bool) -> tuple[Verdict, str]:
    """The verdict of an item: judged just now by preflight, or as the checkpoint has it."""
    phase = item.phase
    why = item.error_message or item.detail
    if judged_now:
        if phase == Phase.PENDING:
            return Verdict.COPY, ""
        if phase in (Phase.SUCCEEDED, Phase.VERIFYING):
            return Verdict.PRESENT, (
                f"already in {item.row.target_region} as {item.target_image_id} "
                "(carries this item's token): adopted, not copied again"
            )
        if phase == Phase.ADOPTED:
            return Verdict.PRESENT, (
                f"being copied to {item.row.target_region} as {item.target_image_id} "
                "(carries this item's token): the run follows that copy, never a second one"
            )
        return Verdict.REJECTED, why
    if phase == Phase.SUCCEEDED:
        return Verdict.DONE, f"succeeded ({item.detail or 'copied'}): {item.target_image_id}"
    if phase.holds_slot or phase.is_after_copy:
        return Verdict.IN_FLIGHT, f"{item.detail or phase.value}: the next run follows it"
    if phase == Phase.FAILED:
        return Verdict.FAILED, f"failed in an earlier run: {why}; {RETRY_HINT}"
    if phase == Phase.REJECTED:
        return Verdict.REJECTED, f"rejected by an earlier run: {why}; {RETRY_HINT} (judged again)"
    return Verdict.COPY, ""


def row_of(
    item: Item, verdict: Verdict, reason: str, speed: Speed, notes: Sequence[str]
) -> PlanRow:
    row = item.row
    return PlanRow(
        line=row.line,
        verdict=verdict,
        reason=reason,
        code=item.error_code or "" if verdict in (Verdict.REJECTED, Verdict.FAILED) else "",
        tenant=row.tenant,
        image_id=row.image_id,
        source_region=row.source_region,
        target_region=row.target_region,
        name=item.copy_name or row.name or "",
        size_bytes=item.size_bytes,
        expected_seconds=speed.duration(item.size_bytes) if verdict == Verdict.COPY else None,
        notes=tuple(notes),
    )


def bad_rows(manifest: Manifest) -> list[PlanRow]:
    """The list's own problems (``file:line: column: what``), one rejected row per line, under
    its tenant when the tenant cell could be read (the summary's "(bad row)" is for the rest)."""
    by_line: dict[int, list[str]] = defaultdict(list)
    unreadable: set[int] = set()  # lines whose tenant cell is no text
    for problem in manifest.problems:
        by_line[problem.line].append(str(problem))
        if problem.column == "tenant":
            unreadable.add(problem.line)
    # An unreadable cell reads as the default tenant, which is never refused by name: a
    # problem on the tenant column of such a row is that the cell could not be read.
    tenants = {
        row.line: row.tenant
        for row, _why in manifest.rejected
        if not (row.line in unreadable and row.tenant == DEFAULT_TENANT)
    }
    return [
        PlanRow(
            line=line,
            verdict=Verdict.REJECTED,
            reason="; ".join(texts),
            code="bad_row",
            tenant=tenants.get(line, ""),
        )
        for line, texts in sorted(by_line.items())
    ]


def tenant_note(error: CloudError) -> tuple[Verdict, str]:
    if error.kind == ErrorKind.AUTH:
        return Verdict.BLOCKED, (
            f"credentials refused ({error}): fix this tenant's credentials before running"
        )
    return Verdict.UNCHECKED, (
        f"the cloud could not be asked ({error}): check the endpoint and the network, "
        "then plan again"
    )
