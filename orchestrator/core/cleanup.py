"""What ``ims-migrate cleanup`` would delete: the leftovers among the images of a target. Pure.

An image is a leftover when it carries the token of an item of the list (the tool writes it in
the description of every copy) and is not that item's copy:

* the item has its copy (succeeded, or verifying/carrying it): any other image with its token
  is a leftover (a ``killed`` copy of an earlier attempt, or a duplicate);
* the item has no copy yet (pending, in flight, failed, rejected): only a broken image
  (``killed``, ``deleted``...) is a leftover: a live one may be the copy a run will adopt.

An image without a token of the list's items is never a leftover, whatever its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator.core.cloud import Image
from orchestrator.core.model import TOKEN_PREFIX, Item, Phase
from orchestrator.core.rules import DEAD_STATUSES

_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[0-9a-f]{16}")  # model.item_token's form


@dataclass(frozen=True)
class Leftover:
    item: Item
    image: Image
    why: str


def has_copy(item: Item) -> bool:
    return item.target_image_id is not None and (
        item.phase == Phase.SUCCEEDED or item.phase.is_after_copy
    )


def leftovers(items: Iterable[Item], images: Iterable[Image]) -> list[Leftover]:
    """The leftovers among ``images`` (one target's listing) for ``items``."""
    by_token: Mapping[str, Item] = {item.token: item for item in items}
    out = []
    for image in images:
        for token in _TOKEN.findall(image.description):
            item = by_token.get(token)
            if item is None or (image.id == item.target_image_id and has_copy(item)):
                continue
            broken = image.status in DEAD_STATUSES
            if has_copy(item):
                what = f"{image.status} image" if broken else "duplicate"
                why = f"{what} beside the item's copy {item.target_image_id}"
                out.append(Leftover(item, image, why))
            elif broken:
                out.append(Leftover(item, image, f"{image.status} copy of a failed attempt"))
            break
    return out
