"""Preflight: look every pending item up in the cloud and judge it before anything is submitted.

Images are listed page by page per (tenant, region, project) rather than fetched one request
per row; only ids that the private listing lacks (shared or public images, typos) are looked up
one by one. A region that holds both sources and copies of one tenant is listed once: the same
listing shows the sources to judge there and the copies already made there (the run's target
index keeps their tokens). The judgement itself is ``core/rules.py``'s, pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import anyio

from orchestrator.config import Config
from orchestrator.core.aftercopy import facts_text
from orchestrator.core.cloud import CloudError, ErrorKind, Image, TenantCloud
from orchestrator.core.model import Item, Phase
from orchestrator.core.rules import TargetKind, check_source, check_target, source_flags
from orchestrator.core.units import GIB
from orchestrator.engine.context import log
from orchestrator.engine.targets import TargetIndex

LOOKUP_CONCURRENCY = 8


@dataclass
class PreflightResult:
    items: list[Item] = field(default_factory=list)  # every input item, judged
    tenant_errors: dict[str, CloudError] = field(default_factory=dict)
    stale: list[tuple[Item, Image]] = field(default_factory=list)  # broken copies to clean up
    flags: dict[str, list[str]] = field(default_factory=dict)  # item key -> doubts (Windows)


@dataclass
class _Catalog:
    """What the cloud said, keyed for the rules."""

    sources: dict[tuple[str, str, str], dict[str, Image]] = field(default_factory=dict)
    targets: dict[tuple[str, str, str], dict[str, list[Image]]] = field(default_factory=dict)


async def _list_sources(
    cloud: TenantCloud,
    region: str,
    project: str,
    wanted: set[str],
    limiter: anyio.CapacityLimiter,
    listed: Sequence[Image] | None = None,
) -> dict[str, Image]:
    """The wanted source images of one (region, project): from ``listed`` (the region's private
    listing, already taken as a target's) or a listing taken now; looked up one by one if the
    listing lacks them."""
    if listed is None:
        async with limiter:
            listed = await cloud.list_images(region, project=project)
    found = {image.id: image for image in listed if image.id in wanted}  # only the list's
    missing = sorted(wanted - found.keys())

    async def lookup(image_id: str) -> None:
        async with limiter:
            try:
                images = await cloud.list_images(
                    region, project=project, image_id=image_id, private_only=False
                )
            except CloudError as error:
                if error.kind != ErrorKind.NOT_FOUND:
                    raise
                images = []
        for image in images:
            if image.id == image_id:
                found[image_id] = image

    async with anyio.create_task_group() as group:
        for image_id in missing:
            group.start_soon(lookup, image_id)
    return found


async def _catalog_tenant(
    cloud: TenantCloud,
    items: Sequence[Item],
    catalog: _Catalog,
    limiter: anyio.CapacityLimiter,
    index: TargetIndex,
) -> None:
    wanted: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    targets: set[tuple[str, str, str]] = set()
    for item in items:
        row = item.row
        wanted[(row.tenant, row.source_region, row.source_project)].add(row.image_id)
        targets.add((row.tenant, row.target_region, row.target_project))

    async def fill_source(key: tuple[str, str, str]) -> None:
        catalog.sources[key] = await _list_sources(cloud, key[1], key[2], wanted[key], limiter)

    async def fill_target(key: tuple[str, str, str]) -> None:
        async with limiter:  # the run's listing: the index keeps the tokens it shows
            images = await index.take(key)
        catalog.targets[key] = by_name(images)
        if key in wanted:  # the same listing shows this region's sources: not listed twice
            catalog.sources[key] = await _list_sources(
                cloud, key[1], key[2], wanted[key], limiter, images
            )

    async with anyio.create_task_group() as group:
        for key in wanted.keys() - targets:
            group.start_soon(fill_source, key)
        for key in targets:
            group.start_soon(fill_target, key)


def by_name(images: Iterable[Image]) -> dict[str, list[Image]]:
    out: dict[str, list[Image]] = defaultdict(list)
    for image in images:
        out[image.name].append(image)
    return dict(out)


class Judged(NamedTuple):
    item: Item  # as preflight leaves it: pending, rejected or adopted
    stale: list[Image]  # broken copies of it found in the target
    flags: list[str]  # what is allowed but doubtful about its source image (Windows)


def judge(item: Item, catalog: _Catalog, config: Config) -> Judged:
    """The item after preflight, the broken copies of it in the target, and its flags."""
    row = item.row
    image = catalog.sources[(row.tenant, row.source_region, row.source_project)].get(row.image_id)
    rejections = check_source(row, image, config, token=item.token)
    if rejections:
        reason = "; ".join(r.message for r in rejections)
        code = ",".join(r.code for r in rejections)
        rejected = item.advance(
            Phase.REJECTED, detail=reason, error_code=code, error_message=reason
        )
        return Judged(rejected, [], [])
    assert image is not None  # noqa: S101 -- check_source rejects a missing image
    flags = [str(flag) for flag in source_flags(image)]
    copy_name = row.name or image.name
    item = item.with_changes(
        size_bytes=image.size_bytes or image.min_disk * GIB,
        copy_name=copy_name,
        source_facts=facts_text(image),  # what the copy is compared with (engine/aftercopy.py)
    )
    targets = catalog.targets[(row.tenant, row.target_region, row.target_project)]
    verdict = check_target(row, copy_name, item.token, targets)
    stale = list(verdict.stale)
    if verdict.kind == TargetKind.CONFLICT:
        reason = verdict.rejection.message if verdict.rejection else "name conflict in the target"
        rejected = item.advance(
            Phase.REJECTED, detail=reason, error_code="name_conflict", error_message=reason
        )
        return Judged(rejected, stale, flags)
    if verdict.kind == TargetKind.PRESENT and verdict.image is not None:
        if verdict.succeeded:
            done = item.advance(
                Phase.VERIFYING,
                target_image_id=verdict.image.id,
                detail="verifying: adopted: already in the target",
            )
            return Judged(done, stale, flags)
        adopted = item.advance(
            Phase.ADOPTED, target_image_id=verdict.image.id, detail="adopted: copy in progress"
        )
        return Judged(adopted, stale, flags)
    return Judged(item, stale, flags)


def _judge_tenant(items: Iterable[Item], catalog: _Catalog, config: Config) -> PreflightResult:
    """One tenant's items judged against its listings; each flag is logged as it is found."""
    out = PreflightResult()
    for item in items:
        judged, stale, flags = judge(item, catalog, config)
        out.items.append(judged)
        out.stale.extend((judged, image) for image in stale)
        for flag in flags:
            log.warning("item.flag", tenant=item.row.tenant, item=item.key, flag=flag)
        if flags:
            out.flags[item.key] = flags
    return out


async def preflight(
    items: Iterable[Item],
    clouds: Mapping[str, TenantCloud],
    config: Config,
    targets: TargetIndex | None = None,
) -> PreflightResult:
    """Judge every item; a tenant whose listing fails keeps its items as they were.
    ``targets`` keeps the target listings taken (the run's, see ``engine/targets.py``)."""
    targets = targets or TargetIndex(clouds, lambda: 0.0, settle=float("inf"))
    by_tenant: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_tenant[item.row.tenant].append(item)
    result = PreflightResult()
    verdicts: dict[str, PreflightResult] = {}
    limiter = anyio.CapacityLimiter(LOOKUP_CONCURRENCY)

    async def one_tenant(tenant: str, tenant_items: list[Item]) -> None:
        catalog = _Catalog()  # this tenant's listings only, let go once its items are judged
        try:
            await _catalog_tenant(clouds[tenant], tenant_items, catalog, limiter, targets)
        except CloudError as error:
            result.tenant_errors[tenant] = error
            return
        except ExceptionGroup as group:  # errors of several listings of one tenant
            errors = [e for e in group.exceptions if isinstance(e, CloudError)]
            if len(errors) != len(group.exceptions):
                raise
            result.tenant_errors[tenant] = errors[0]
            return
        verdicts[tenant] = _judge_tenant(tenant_items, catalog, config)

    async with anyio.create_task_group() as group:
        for tenant, tenant_items in by_tenant.items():
            group.start_soon(one_tenant, tenant, tenant_items)

    for tenant, tenant_items in by_tenant.items():
        if tenant in result.tenant_errors:
            result.items.extend(tenant_items)
            continue
        mine = verdicts.pop(tenant)
        result.items.extend(mine.items)
        result.stale.extend(mine.stale)
        result.flags.update(mine.flags)
    return result
