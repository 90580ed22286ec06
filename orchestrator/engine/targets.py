"""What the target regions hold: the cloud's answer to "is this item's copy there already?".

The checkpoint is an optimisation, the cloud the truth (design I2): no item is submitted unless
this run has looked for its token in the target region, whatever the checkpoint says (a second
state dir on the same list, a damaged or rebuilt state). One paged listing per (tenant, target
region, target project) is taken at the start of the run (preflight's, reused) and refreshed,
once for every item waiting, when it is older than ``settle``: a copy made elsewhere since then
may not be in it. A copy found with the item's token is adopted instead of copied again.

Of a listing, only what that question needs is kept for the run: for each token it shows, the
live copy carrying it (id and status). The images themselves (their facts, names, tags) are
let go as soon as the listing is read: preflight, which judges names, gets them from
:meth:`TargetIndex.take` and keeps them only while it judges one tenant (peak memory: 1,000
tenants' listings hold every copy made so far).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import anyio

from orchestrator.core.cloud import ACTIVE, CloudError, Image, TenantCloud
from orchestrator.core.model import TOKEN_PREFIX, Item, Phase
from orchestrator.core.rules import DEAD_STATUSES

TargetKey = tuple[str, str, str]  # tenant, target region, target project
_TOKEN_LENGTH = len(TOKEN_PREFIX) + 16
LISTING_CONCURRENCY = 8


def target_key(item: Item) -> TargetKey:
    row = item.row
    return (row.tenant, row.target_region, row.target_project)


def tokens_in(description: str) -> list[str]:
    """Every item token a description carries (the tool writes ``[token]``)."""
    out = []
    at = description.find(TOKEN_PREFIX)
    while at >= 0:
        out.append(description[at : at + _TOKEN_LENGTH])
        at = description.find(TOKEN_PREFIX, at + 1)
    return out


class Found(NamedTuple):
    """A live copy in a target region, as the index keeps it: its id and status."""

    id: str
    status: str


def live_copies(images: Iterable[Image]) -> dict[str, Found]:
    """For each token the images carry, the live copy carrying it: the first active one in
    listing order, else the first one still being made; killed or deleted ones never (a token
    with no live copy is left out)."""
    out: dict[str, Found] = {}
    for image in images:
        if image.status in DEAD_STATUSES:
            continue
        for token in tokens_in(image.description):
            known = out.get(token)
            if known is None or (known.status != ACTIVE and image.status == ACTIVE):
                out[sys.intern(token)] = Found(image.id, sys.intern(image.status))
    return out


@dataclass(frozen=True)
class Listing:
    """What the run keeps of one listing of a target region: the live copy of each token it
    showed, and when it was taken."""

    copies: Mapping[str, Found]
    taken_at: float


class TargetIndex:
    """The run's listings of the target regions, taken once and refreshed when stale."""

    def __init__(
        self, clouds: Mapping[str, TenantCloud], now: Callable[[], float], settle: float
    ) -> None:
        self._clouds = clouds
        self._now = now
        self._settle = settle
        self._listings: dict[TargetKey, Listing] = {}
        self._locks: dict[TargetKey, anyio.Lock] = defaultdict(anyio.Lock)
        self.listings_taken = 0  # for the tests: one per key, not one per item

    async def _list(self, key: TargetKey) -> list[Image]:
        """A new listing of ``key`` (the caller holds its lock); what it shows is kept."""
        taken_at = self._now()
        tenant, region, project = key
        images = await self._clouds[tenant].list_images(region, project=project)
        self.listings_taken += 1
        self._listings[key] = Listing(live_copies(images), taken_at)
        return images

    async def take(self, key: TargetKey) -> list[Image]:
        """A new listing of ``key``, whose images the caller gets (preflight judges names);
        the index keeps only the copies' tokens. CloudError propagates."""
        async with self._locks[key]:
            return await self._list(key)

    async def listing(self, key: TargetKey, *, max_age: float | None = None) -> Listing:
        """The key's listing, taken now if there is none or it is older than ``max_age``.

        Many items waiting on one stale key share one new listing. CloudError propagates.
        A listing fresh enough is given without the lock: the lock only keeps refreshes from
        running twice, and an anyio lock costs a trip through the event loop even when free
        (one per copy request)."""
        known = self._fresh(key, max_age)
        if known is not None:
            return known
        async with self._locks[key]:
            known = self._fresh(key, max_age)
            if known is None:
                await self._list(key)
            return self._listings[key]

    def _fresh(self, key: TargetKey, max_age: float | None) -> Listing | None:
        """The key's listing if there is one no older than ``max_age`` (None: any age)."""
        known = self._listings.get(key)
        if known is not None and (max_age is None or self._now() - known.taken_at <= max_age):
            return known
        return None

    async def find(self, item: Item) -> Found | None:
        """This item's live copy in its target region, from a listing at most ``settle`` old;
        None once the listing proves it absent. CloudError if the cloud cannot say."""
        listing = await self.listing(target_key(item), max_age=self._settle)
        return listing.copies.get(item.token)

    def found_in_first(self, item: Item) -> Found | None:
        """As :meth:`find`, from the listing already taken (none taken: None)."""
        listing = self._listings.get(target_key(item))
        return None if listing is None else listing.copies.get(item.token)


async def adopt_found(
    targets: TargetIndex, items: Sequence[Item], now: Callable[[], float]
) -> tuple[list[Item], dict[str, CloudError]]:
    """Take one listing per target key of ``items`` (at once, at most a few at a time) and give
    the items whose copy is there, adopted; and the tenants whose listing failed."""
    failed: dict[str, CloudError] = {}
    limiter = anyio.CapacityLimiter(LISTING_CONCURRENCY)

    async def take(key: TargetKey) -> None:
        async with limiter:
            try:
                await targets.listing(key)
            except CloudError as error:
                failed.setdefault(key[0], error)

    async with anyio.create_task_group() as group:
        for key in {target_key(item) for item in items}:
            group.start_soon(take, key)
    adopted = []
    for item in items:
        found = None if item.row.tenant in failed else targets.found_in_first(item)
        if found is None:
            continue
        if found.status == ACTIVE:
            adopted.append(
                item.advance(
                    Phase.VERIFYING,
                    target_image_id=found.id,
                    detail="verifying: adopted: already in the target",
                    finished_at=now(),
                )
            )
        else:
            adopted.append(
                item.advance(
                    Phase.ADOPTED, target_image_id=found.id, detail="adopted: copy in progress"
                )
            )
    return adopted, failed
