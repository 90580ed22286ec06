"""What the target regions hold: the cloud's answer to "is this item's copy there already?".

The checkpoint is an optimisation, the cloud the truth (design I2): no item is submitted unless
this run has looked for its token in the target region, whatever the checkpoint says (a second
state dir on the same list, a damaged or rebuilt state). One paged listing per (tenant, target
region, target project) is taken at the start of the run (preflight's, reused) and refreshed,
once for every item waiting, when it is older than ``settle``: a copy made elsewhere since then
may not be in it. A copy found with the item's token is adopted instead of copied again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Listing:
    """One listing of a target region's private images, and when it was taken."""

    images: tuple[Image, ...]
    taken_at: float

    def by_name(self) -> dict[str, list[Image]]:
        out: dict[str, list[Image]] = defaultdict(list)
        for image in self.images:
            out[image.name].append(image)
        return dict(out)

    def by_token(self) -> dict[str, list[Image]]:
        out: dict[str, list[Image]] = defaultdict(list)
        for image in self.images:
            for token in tokens_in(image.description):
                out[token].append(image)
        return dict(out)


def own_copy(token: str, images: Iterable[Image]) -> Image | None:
    """The live copy carrying ``token`` (an active one first); killed or deleted ones never."""
    live = [image for image in images if image.status not in DEAD_STATUSES]
    live.sort(key=lambda image: image.status != ACTIVE)
    return live[0] if live else None


class TargetIndex:
    """The run's listings of the target regions, taken once and refreshed when stale."""

    def __init__(
        self, clouds: Mapping[str, TenantCloud], now: Callable[[], float], settle: float
    ) -> None:
        self._clouds = clouds
        self._now = now
        self._settle = settle
        self._listings: dict[TargetKey, Listing] = {}
        self._tokens: dict[TargetKey, dict[str, list[Image]]] = {}
        self._locks: dict[TargetKey, anyio.Lock] = defaultdict(anyio.Lock)
        self.listings_taken = 0  # for the tests: one per key, not one per item

    async def listing(self, key: TargetKey, *, max_age: float | None = None) -> Listing:
        """The key's listing, taken now if there is none or it is older than ``max_age``.

        Many items waiting on one stale key share one new listing. CloudError propagates."""
        async with self._locks[key]:
            known = self._listings.get(key)
            if known is not None and (max_age is None or self._now() - known.taken_at <= max_age):
                return known
            taken_at = self._now()
            tenant, region, project = key
            images = await self._clouds[tenant].list_images(region, project=project)
            self.listings_taken += 1
            fresh = Listing(tuple(images), taken_at)
            self._listings[key] = fresh
            self._tokens.pop(key, None)
            return fresh

    def _token_map(self, key: TargetKey) -> dict[str, list[Image]]:
        tokens = self._tokens.get(key)
        if tokens is None:
            tokens = self._tokens[key] = self._listings[key].by_token()
        return tokens

    async def find(self, item: Item) -> Image | None:
        """This item's live copy in its target region, from a listing at most ``settle`` old;
        None once the listing proves it absent. CloudError if the cloud cannot say."""
        key = target_key(item)
        await self.listing(key, max_age=self._settle)
        return own_copy(item.token, self._token_map(key).get(item.token, ()))

    def found_in_first(self, item: Item) -> Image | None:
        """As :meth:`find`, from the listing already taken (none taken: None)."""
        key = target_key(item)
        if key not in self._listings:
            return None
        return own_copy(item.token, self._token_map(key).get(item.token, ()))


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
