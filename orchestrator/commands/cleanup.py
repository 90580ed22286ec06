"""``ims-migrate cleanup``: find, and with ``--yes`` delete, what failed copies left behind.

A failed cross-region copy can leave a ``killed`` image in the target region, which counts
against the private-image quota. For each (tenant, target region, project) of the state dir's
items, one listing of the target's private images; the leftovers among them are
:func:`orchestrator.core.cleanup.leftovers` (an image without this tool's token is never one).
With ``yes``, each is deleted (``DELETE /v2/images/{id}``) and looked for again until it is gone
(as Terraform does), a bounded number of times.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import tenant_credentials
from orchestrator.config import Config
from orchestrator.core.advice import DELETE, refused_for
from orchestrator.core.backoff import look_backoff
from orchestrator.core.cleanup import Leftover, leftovers
from orchestrator.core.cloud import CloudError, ErrorKind, TenantCloud
from orchestrator.core.model import Item

GONE_LOOKS = 8  # looks for a deleted image before it is said to be still there
LISTING_CONCURRENCY = 4

Target = tuple[str, str, str]  # tenant, target region, target project
PROC_LOCKS = Path("/proc/locks")  # Linux: the locks held, with the pid of each holder


@dataclass
class Cleanup:
    """What was found and done."""

    found: list[Leftover] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # image ids gone
    not_deleted: dict[str, str] = field(default_factory=dict)  # image id -> why
    unlisted: dict[Target, str] = field(default_factory=dict)  # targets that could not be read

    @property
    def left(self) -> int:
        """Leftovers still there (or possibly there): 0 is exit 0."""
        return len(self.found) - len(self.deleted) + len(self.unlisted)


def _targets(items: Iterable[Item]) -> dict[Target, list[Item]]:
    out: dict[Target, list[Item]] = defaultdict(list)
    for item in items:
        row = item.row
        out[(row.tenant, row.target_region, row.target_project)].append(item)
    return dict(out)


async def _find(
    clouds: Mapping[str, TenantCloud], targets: Mapping[Target, Sequence[Item]], found: Cleanup
) -> None:
    limiter = anyio.CapacityLimiter(LISTING_CONCURRENCY)

    async def one(target: Target) -> None:
        tenant, region, project = target
        async with limiter:
            try:
                images = await clouds[tenant].list_images(region, project=project)
            except CloudError as error:
                found.unlisted[target] = str(error)
                return
        found.found.extend(leftovers(targets[target], images))

    async with anyio.create_task_group() as group:
        for target in targets:
            group.start_soon(one, target)
    found.found.sort(key=lambda left: (left.item.row.line, left.image.id))


async def _delete(cloud: TenantCloud, left: Leftover, clock: Clock, config: Config) -> str | None:
    """Delete, then wait until the image is gone; None when it is, else why not."""
    row, image_id = left.item.row, left.image.id
    try:
        await cloud.delete_image(row.target_region, image_id, project=row.target_project)
    except CloudError as error:
        if error.kind != ErrorKind.NOT_FOUND:
            return str(refused_for(error, DELETE))
    backoff = look_backoff(config.timing.poll_min, config.timing.poll_max)
    for look in range(GONE_LOOKS):
        try:
            still = await cloud.list_images(
                row.target_region, project=row.target_project, image_id=image_id, private_only=False
            )
        except CloudError as error:
            if error.kind != ErrorKind.NOT_FOUND:
                return f"deleted, but could not check that it is gone: {error}"
            still = []
        if not any(image.id == image_id for image in still):
            return None
        await clock.sleep(backoff.delay(look))
    return f"still there after {GONE_LOOKS} looks (the cloud may take longer: look again later)"


async def clean_up(
    config: Config,
    environ: Mapping[str, str],
    items: Sequence[Item],
    *,
    yes: bool,
    clouds: CloudFactory = open_clouds,
    clock: Clock | None = None,
) -> Cleanup:
    """Find the leftovers of ``items``' copies; delete them when ``yes``."""
    clock = clock or RealClock()
    # A row the list's checks refused was never sent (its tenant may not even be configured).
    targets = _targets(item for item in items if not item.row.problem)
    credentials = tenant_credentials(config, environ, {tenant for tenant, _, _ in targets})
    result = Cleanup()
    async with clouds(config, credentials, clock) as opened:
        await _find(opened, targets, result)
        if not yes:
            return result
        for left in result.found:
            why = await _delete(opened[left.item.row.tenant], left, clock, config)
            if why is None:
                result.deleted.append(left.image.id)
            else:
                result.not_deleted[left.image.id] = why
    return result


def lock_holder(lock: Path, locks: str | None = None) -> int | None:
    """The pid of the process holding the flock on ``lock`` (as a run takes the state dir's
    lock), read from ``/proc/locks`` (``locks``: its text); None when it cannot be told (not
    Linux, the file gone, no such line)."""
    try:
        found = lock.stat()
        text = PROC_LOCKS.read_text() if locks is None else locks
    except OSError:
        return None
    device = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 23555 fe:00:2335491 0 EOF"; "1: -> FLOCK ..." waits
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            return int(fields[4]) if fields[4].isdigit() else None
    return None
