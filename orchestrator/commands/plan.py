"""``ims-migrate plan``: what ``run`` would do with a list, found out with read-only calls.

Every row gets one verdict: ``copy`` (it will be copied), ``present`` (a copy carrying this
item's token is already in the target: it is adopted, not copied again), ``done``,
``in flight`` or ``failed`` (what the checkpoint says, when there is one), ``rejected`` (why),
``blocked`` (the tenant's credentials were refused) or ``unchecked`` (the cloud could not be
asked). The judgement is preflight's (``preflight.py`` and ``rules.py``), so the plan and the
run agree.

Read-only: the plan checks each tenant's credentials once (the IAM project lookup the run
makes), lists images and reads the target quotas (``GET /v1/cloudimages/quota``). It never
copies, never takes the state dir's lock and writes nothing there: it reads the checkpoint the
way ``status`` does, so it can be used while a run is going on. Credentials a run found refused
(remembered in the checkpoint) are not tried again.

The time estimate (``estimate.py``) packs each account's copies into its slots the way the run
does, with a copy speed that is an assumption until a run has finished copies (then it is
learned from the checkpoint); the plan says which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import anyio

from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import UsageError, check_owner, state_dir_for, tenant_credentials
from orchestrator.config import Config
from orchestrator.core.cloud import CloudError, ErrorKind, TenantCloud
from orchestrator.core.credentials import credential_fingerprint
from orchestrator.core.estimate import AccountEstimate, Speed, estimate, speed_from_samples
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import merge_list
from orchestrator.engine.preflight import preflight
from orchestrator.manifest import Manifest, load_manifest
from orchestrator.state.checkpoint import read_snapshot, snapshot_meta
from orchestrator.state.codec import item_from_dict
from orchestrator.state.meta import RunMeta


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
class PlanRequest:
    list_path: Path
    config: Config
    environ: Mapping[str, str]
    state_dir: Path | None = None
    tenants: frozenset[str] = frozenset()
    source_regions: frozenset[str] = frozenset()
    target_regions: frozenset[str] = frozenset()


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
        if phase == Phase.SUCCEEDED:
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
    if phase.holds_slot:
        return Verdict.IN_FLIGHT, f"{item.detail or phase.value}: the next run follows it"
    if phase == Phase.FAILED:
        return Verdict.FAILED, f"failed in an earlier run: {why}; {RETRY_HINT}"
    if phase == Phase.REJECTED:
        return Verdict.REJECTED, f"rejected by an earlier run: {why}; {RETRY_HINT} (judged again)"
    return Verdict.COPY, ""


def _row_of(
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
    """The list's own problems (``file:line: column: what``), one rejected row per line."""
    by_line: dict[int, list[str]] = defaultdict(list)
    for problem in manifest.problems:
        by_line[problem.line].append(str(problem))
    return [
        PlanRow(line=line, verdict=Verdict.REJECTED, reason="; ".join(texts), code="bad_row")
        for line, texts in sorted(by_line.items())
    ]


# -- asking the cloud ----------------------------------------------------------------------------


def _selected(item: Item, request: PlanRequest) -> bool:
    return item.row.matches(request.tenants, request.source_regions, request.target_regions)


def _read_state(request: PlanRequest, state_dir: Path) -> tuple[dict[str, Item], RunMeta]:
    """The checkpoint's items and meta, read as ``status`` reads them: no lock, no write."""
    snap = read_snapshot(state_dir, item_from_dict)
    if snap is None:
        return {}, RunMeta()
    meta = snapshot_meta(snap, state_dir)
    check_owner(meta, request.list_path, state_dir)
    return dict(snap["items"]), meta


async def _probe(
    clouds: Mapping[str, TenantCloud], region_of: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, CloudError]]:
    domains: dict[str, str] = {}
    errors: dict[str, CloudError] = {}

    async def one(tenant: str) -> None:
        try:
            domains[tenant] = await clouds[tenant].probe(region_of[tenant]) or f"tenant:{tenant}"
        except CloudError as error:
            errors[tenant] = error

    async with anyio.create_task_group() as group:
        for tenant in clouds:
            group.start_soon(one, tenant)
    return domains, errors


async def _quotas(
    clouds: Mapping[str, TenantCloud], adds: Mapping[tuple[str, str, str], int]
) -> list[QuotaCheck]:
    checks: list[QuotaCheck] = []

    async def one(key: tuple[str, str, str]) -> None:
        tenant, region, project = key
        try:
            quota = await clouds[tenant].get_quota(region, project=project)
        except CloudError as error:
            checks.append(QuotaCheck(tenant, region, project, adds[key], error=str(error)))
        else:
            checks.append(QuotaCheck(tenant, region, project, adds[key], quota.used, quota.quota))

    async with anyio.create_task_group() as group:
        for key in adds:
            group.start_soon(one, key)
    return sorted(checks, key=lambda c: (c.tenant, c.region, c.project))


def tenant_note(error: CloudError) -> tuple[Verdict, str]:
    if error.kind == ErrorKind.AUTH:
        return Verdict.BLOCKED, (
            f"credentials refused ({error}): fix this tenant's credentials before running"
        )
    return Verdict.UNCHECKED, (
        f"the cloud could not be asked ({error}): check the endpoint and the network, "
        "then plan again"
    )


@dataclass
class _Judgement:
    """What the cloud said: verdicts of the items judged now, accounts, tenants held back."""

    verdicts: dict[str, tuple[Verdict, str, Item]] = field(default_factory=dict)
    account_of: dict[str, str] = field(default_factory=dict)  # tenant -> account (IAM domain)
    held: dict[str, Verdict] = field(default_factory=dict)  # tenant -> blocked / unchecked


async def make_plan(
    request: PlanRequest,
    *,
    clouds: CloudFactory = open_clouds,
    clock: Clock | None = None,
) -> Plan:
    """Judge every row of the list with read-only calls. ``clouds`` opens the tenants' clouds
    (default: HTTP clients from the credentials in the environment), ``clock`` tells the time
    the estimate starts from."""
    clock = clock or RealClock()
    config = request.config
    try:
        manifest = load_manifest(request.list_path, config)
    except OSError as exc:
        raise UsageError(f"{request.list_path}: cannot read the list ({exc.strerror})") from exc
    state_dir = state_dir_for(request.list_path, request.state_dir)
    existing, meta = _read_state(request, state_dir)
    merged = merge_list(existing, manifest.rows)
    chosen = [item for item in merged if item.listed and _selected(item, request)]
    plan = Plan(request.list_path, state_dir, config.max_concurrent_copies)
    plan.not_listed = sum(not item.listed for item in merged)
    plan.speed = speed_from_samples(meta.speed_samples)
    open_items = [item for item in chosen if not item.phase.is_terminal]
    notes: dict[str, list[str]] = defaultdict(list)  # item key -> preflight's flags and more
    judgement = (
        await _ask_cloud(request, plan, open_items, meta, notes, clouds, clock)
        if open_items
        else _Judgement()
    )
    verdicts: dict[str, Verdict] = {}
    judged_items = []
    for item in chosen:
        found = judgement.verdicts.get(item.key)
        if found is not None:
            verdict, reason, judged = found
        elif item.row.tenant in judgement.held and not item.phase.is_terminal:
            verdict, reason, judged = (
                judgement.held[item.row.tenant], plan.tenant_notes[item.row.tenant], item
            )  # fmt: skip
        else:
            verdict, reason = verdict_of(item, judged_now=False)
            judged = item
        verdicts[item.key] = verdict
        judged_items.append(judged)
        plan.rows.append(_row_of(judged, verdict, reason, plan.speed, notes[item.key]))
    plan.rows.extend(bad_rows(manifest))
    plan.rows.sort(key=lambda row: row.line)
    plan.accounts = estimate(
        [i for i in judged_items if verdicts[i.key] == Verdict.COPY],
        [  # copies under way, ours or found in the target, hold a slot until they end
            i
            for i in judged_items
            if verdicts[i.key] == Verdict.IN_FLIGHT
            or (verdicts[i.key] == Verdict.PRESENT and i.phase == Phase.ADOPTED)
        ],
        judgement.account_of,
        plan.speed,
        plan.slots,
        clock.now(),
    )
    return plan


async def _ask_cloud(
    request: PlanRequest,
    plan: Plan,
    open_items: Sequence[Item],
    meta: RunMeta,
    notes: MutableMapping[str, list[str]],
    clouds: CloudFactory,
    clock: Clock,
) -> _Judgement:
    """The tenants' clouds, from the credentials in the environment (missing: exit 2)."""
    config = request.config
    tenants = {item.row.tenant for item in open_items}
    credentials = tenant_credentials(config, request.environ, tenants)
    fingerprints = {name: credential_fingerprint(creds) for name, (_, creds) in credentials.items()}
    async with clouds(config, credentials, clock) as opened:
        return await _judge(config, plan, opened, open_items, meta, fingerprints, notes)


def _remembered_blocks(
    plan: Plan, tenants: Iterable[str], meta: RunMeta, fingerprints: Mapping[str, str]
) -> dict[str, Verdict]:
    """Tenants whose very credentials a run saw refused: never tried again (the gateway locks
    a key after 5 bad signatures in a row)."""
    held = {}
    for tenant, why in meta.blocked.items():
        if tenant in tenants and why.fingerprint == fingerprints.get(tenant, ""):
            held[tenant] = Verdict.BLOCKED
            plan.tenant_notes[tenant] = (
                f"credentials refused by an earlier run ({why.code}: {why.message})"
                "; not tried again until they change: fix them, then plan again"
            )
    return held


async def _judge(
    config: Config,
    plan: Plan,
    clouds: Mapping[str, TenantCloud],
    open_items: Sequence[Item],
    meta: RunMeta,
    fingerprints: Mapping[str, str],
    notes: MutableMapping[str, list[str]],
) -> _Judgement:
    """Probe the tenants, judge the pending items, read the quotas of what they add."""
    region_of = {item.row.tenant: item.row.source_region for item in reversed(open_items)}
    out = _Judgement(held=_remembered_blocks(plan, region_of, meta, fingerprints))
    askable = {t: clouds[t] for t in region_of if t not in out.held}
    out.account_of, errors = await _probe(askable, region_of)
    for tenant, error in sorted(errors.items()):
        out.held[tenant], plan.tenant_notes[tenant] = tenant_note(error)
    usable = [
        item
        for item in open_items
        if item.phase == Phase.PENDING and item.row.tenant not in out.held
    ]
    checked = await preflight(usable, clouds, config)
    for tenant, error in checked.tenant_errors.items():
        out.held[tenant], plan.tenant_notes[tenant] = tenant_note(error)
    for item in checked.items:
        if item.row.tenant not in out.held:
            verdict, reason = verdict_of(item, judged_now=True)
            out.verdicts[item.key] = (verdict, reason, item)
    for key, flags in checked.flags.items():
        notes[key].extend(flags)
    for item, image in checked.stale:
        notes[item.key].append(
            f"a broken copy of it ({image.id}, {image.status}) is in the target: delete it"
        )
    adds: dict[tuple[str, str, str], int] = defaultdict(int)
    for verdict, _, item in out.verdicts.values():
        if verdict == Verdict.COPY:
            adds[(item.row.tenant, item.row.target_region, item.row.target_project)] += 1
    plan.quotas = await _quotas(clouds, adds)
    return out
