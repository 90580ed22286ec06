"""``ims-migrate plan``: what ``run`` would do with a list, found out with read-only calls.

Every row gets one verdict: ``copy`` (it will be copied), ``present`` (a copy carrying this
item's token is already in the target: it is adopted, not copied again), ``done``,
``in flight`` or ``failed`` (what the checkpoint says, when there is one), ``rejected`` (why),
``blocked`` (the tenant's credentials were refused) or ``unchecked`` (the cloud could not be
asked). The judgement is preflight's (``engine/preflight.py`` and ``core/rules.py``), so the
plan and the run agree.

Read-only: the plan checks each tenant's credentials once (the IAM project lookup the run
makes), lists images and reads the target quotas (``GET /v1/cloudimages/quota``). It never
copies, never takes the state dir's lock and writes nothing there: it reads the checkpoint the
way ``status`` does, so it can be used while a run is going on. Credentials a run found refused
(remembered in the checkpoint) are not tried again.

The time estimate (``core/estimate.py``) packs each account's copies into its slots the way the run
does, with a copy speed that is an assumption until a run has finished copies (then it is
learned from the checkpoint); the plan says which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import (
    UsageError,
    check_filters,
    check_owner,
    state_dir_for,
    tenant_credentials,
)
from orchestrator.commands.verdicts import (
    VERDICTS,
    Plan,
    PlanRow,
    QuotaCheck,
    Verdict,
    bad_rows,
    row_of,
    tenant_note,
    verdict_of,
)
from orchestrator.config import Config
from orchestrator.core.aftercopy import carry_plan
from orchestrator.core.cloud import CloudError, TenantCloud, remembered_refusal
from orchestrator.core.credentials import credential_fingerprint
from orchestrator.core.estimate import estimate, speed_from_samples
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import is_shown, merge_list
from orchestrator.engine.preflight import preflight
from orchestrator.manifest import load_manifest
from orchestrator.state.checkpoint import read_snapshot, snapshot_meta
from orchestrator.state.codec import item_from_dict
from orchestrator.state.meta import RunMeta

__all__ = ["VERDICTS", "Plan", "PlanRequest", "PlanRow", "QuotaCheck", "Verdict", "make_plan"]


@dataclass(frozen=True)
class PlanRequest:
    list_path: Path
    config: Config
    environ: Mapping[str, str]
    state_dir: Path | None = None
    tenants: frozenset[str] = frozenset()
    source_regions: frozenset[str] = frozenset()
    target_regions: frozenset[str] = frozenset()


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
    # The items as the run would merge them, the list's bad rows included: ``not_listed`` then
    # counts what ``status`` counts (a bad row is in the list; ``bad_rows`` gives its plan row).
    merged = [item for item in merge_list(existing, manifest.rows, manifest.rejected)
              if is_shown(item)]  # fmt: skip
    listed = [item.row for item in merged if item.listed]
    filters = (request.tenants, request.source_regions, request.target_regions)
    check_filters(request.list_path, filters, listed)  # before any call, as run does
    chosen = [
        item for item in merged if item.listed and not item.row.problem and _selected(item, request)
    ]
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
        after = config.after
        carried = carry_plan(
            judged.source_facts, item.row.tags, tags=after.carry_tags, ram=after.carry_ram
        )
        if verdict == Verdict.COPY and carried:
            notes[item.key].append(carried)
        judged_items.append(judged)
        plan.rows.append(row_of(judged, verdict, reason, plan.speed, notes[item.key]))
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
        if (
            tenant in tenants
            and why.fingerprint == fingerprints.get(tenant, "")
            and remembered_refusal(why.code)
        ):
            held[tenant] = Verdict.BLOCKED
            plan.tenant_notes[tenant] = (
                f"credentials refused by an earlier run ({why.code}: {why.message})"
                "; not tried again until they change: fix them, then plan again"
            )
    return held


def _note_unknown_accounts(plan: Plan, account_of: Mapping[str, str]) -> None:
    """Tenants whose account neither IAM nor the config names get a window of their own."""
    for tenant, account in account_of.items():
        if account == f"tenant:{tenant}":
            plan.tenant_notes[tenant] = (
                "its account is not known (IAM was not asked: project_ids are configured; "
                'no account = "..." in its config): it gets a window of 5 copies of its '
                "own; if it shares an account with another tenant, give both the same "
                "account (the IAM domain id)"
            )


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
    if len(region_of) > 1:
        _note_unknown_accounts(plan, out.account_of)
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
            f"a broken copy of it ({image.id}, {image.status}) is in the target: "
            "`ims-migrate cleanup --yes` deletes it"
        )
    adds: dict[tuple[str, str, str], int] = defaultdict(int)
    for verdict, _, item in out.verdicts.values():
        if verdict == Verdict.COPY:
            adds[(item.row.tenant, item.row.target_region, item.row.target_project)] += 1
    plan.quotas = await _quotas(clouds, adds)
    return out
