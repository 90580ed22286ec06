"""Preflight rules: one item checked against what the cloud said. Pure: values in, verdicts out.

``check_source`` applies the documented constraints of a cross-region copy (docs/ims-api.md §4.2) to
the row and its source image; every failed check is a :class:`Rejection` whose message says what
is wrong, with the numbers. ``source_flags`` notes what is allowed but doubtful (Windows).
``check_target`` decides from the target region's images with the copy's name whether the copy
is absent (go ahead), present (adopt it: it carries this item's token) or in conflict (an image
with that name that this item did not create: never adopted, never copied over).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.config import Config
from orchestrator.core.cloud import ACTIVE, KILLED, Image
from orchestrator.core.model import Row
from orchestrator.core.request_text import description_problem, name_problem
from orchestrator.core.units import GIB

PRIVATE = "private"
DELETED = "deleted"
ISO_FORMAT = "iso"
ISO_ENV_TYPE = "IsoImage"
ENCRYPTED_FLAGS = frozenset({"1", "true", "True"})
DEAD_STATUSES = frozenset({KILLED, DELETED})


@dataclass(frozen=True)
class Rejection:
    """Why an item will not be copied: a short snake_case code and a message for people."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Something doubtful about an item that does not stop its copy (e.g. ``windows``): the same
# shape as a rejection, a code and a message, so the same type under the name that says so.
Flag = Rejection


class TargetKind(StrEnum):
    ABSENT = "absent"  # no copy of this item in the target: go ahead
    PRESENT = "present"  # a copy carrying this item's token: adopt it
    CONFLICT = "conflict"  # same name, not this item's: never adopted, never copied over


@dataclass(frozen=True)
class TargetVerdict:
    """What the target region holds under the copy's name, as far as this item is concerned."""

    kind: TargetKind
    image: Image | None = None  # the copy to adopt (PRESENT) or the image in the way (CONFLICT)
    stale: tuple[Image, ...] = ()  # this item's killed/deleted copies: for the cleanup report
    duplicates: tuple[Image, ...] = ()  # further live copies with this item's token
    rejection: Rejection | None = None  # set for CONFLICT

    @property
    def succeeded(self) -> bool:
        """The adopted copy is active: the item has succeeded."""
        return (
            self.kind is TargetKind.PRESENT
            and self.image is not None
            and (self.image.status == ACTIVE)
        )

    @property
    def in_progress(self) -> bool:
        """The adopted copy is still being made (queued, saving): wait for it."""
        return self.kind is TargetKind.PRESENT and not self.succeeded


def copy_name_for(row: Row, image: Image | None) -> str | None:
    """The name the copy gets: the row's, else the source image's (None if neither is known)."""
    if row.name:
        return row.name
    return image.name if image is not None else None


def agency_for(row: Row, config: Config) -> str | None:
    """The IMS agency of the copy: the row's, else the config's default."""
    return row.agency_name or config.agency_name


def is_encrypted(image: Image) -> bool:
    """A KMS key id, or an encryption flag (``__system_encrypted``, UNVERIFIED on public cloud)."""
    return bool(image.cmk_id.strip()) or image.encrypted_flag.strip() in ENCRYPTED_FLAGS


def is_iso(image: Image) -> bool:
    return image.disk_format.lower() == ISO_FORMAT or image.virtual_env_type == ISO_ENV_TYPE


def check_source(row: Row, image: Image | None, config: Config, *, token: str) -> list[Rejection]:
    """Every documented reason why this row's copy would be refused; empty if none.

    ``image`` is the source image as the source region lists it (None: not found there);
    ``token`` is the item's token, which the description sent carries.
    """
    rejections: list[Rejection] = []
    if row.source_region == row.target_region:
        rejections.append(
            Rejection(
                "same_region",
                f"target_region is the same as source_region ({row.source_region}); a "
                "cross-region copy needs another region",
            )
        )
    if image is None:
        rejections.append(
            Rejection(
                "not_found",
                f"image {row.image_id} was not found among the private images of project "
                f"{row.source_project} in {row.source_region} (check image_id, source_region "
                "and source_project_name)",
            )
        )
    else:
        rejections.extend(_check_image(row, image, config))
    rejections.extend(_check_request(row, image, config, token))
    return rejections


def _check_image(row: Row, image: Image, config: Config) -> list[Rejection]:
    out: list[Rejection] = []
    if image.status != ACTIVE:
        out.append(
            Rejection(
                "not_active",
                f"image status is {image.status or 'unknown'!r} in {row.source_region}; only "
                "active images can be copied (wait until it is active, or remove the row)",
            )
        )
    if image.imagetype != PRIVATE:
        out.append(
            Rejection(
                "not_private",
                f"image type is {image.imagetype or 'unknown'!r}; only the tenant's own private "
                "images can be copied (public, shared and market images cannot)",
            )
        )
    if is_encrypted(image):
        what = f"KMS key {image.cmk_id.strip()}" if image.cmk_id.strip() else "encryption flag set"
        out.append(
            Rejection(
                "encrypted",
                f"image is encrypted ({what}); encrypted images cannot be copied across regions",
            )
        )
    if is_iso(image):
        out.append(
            Rejection(
                "iso",
                f"image is an ISO image (disk_format {image.disk_format or '?'}, "
                f"virtual_env_type {image.virtual_env_type or '?'}); images made from ISO "
                "files cannot be copied across regions",
            )
        )
    too_large = _check_size(row, image, config)
    if too_large is not None:
        out.append(too_large)
    if image.whole_image and not row.vault_id:
        out.append(
            Rejection(
                "whole_image_needs_vault",
                f"image {image.id} is a full-ECS image; copying it needs a vault_id (a CBR "
                f"vault in {row.target_region}) in the row",
            )
        )
    return out


def _check_size(row: Row, image: Image, config: Config) -> Rejection | None:
    # The documented limit is per region for the images copied *from* it ("华南-广州、华东-上海一、
    # 华东-上海二和华北-北京四用于跨区域复制的镜像不能超过300GiB", docs/ims-api.md §4.2): the image
    # lives in the source region, so the source region's limit is the one that applies. Which
    # attribute the cloud measures is UNVERIFIED, so both are judged.
    limit = config.size_limit_gib(row.source_region)
    parts: list[str] = []
    sizes: list[float] = []
    if image.min_disk > limit:
        parts.append(f"min_disk {image.min_disk} GB")
        sizes.append(float(image.min_disk))
    if image.size_bytes is not None and image.size_bytes > limit * GIB:
        gib = image.size_bytes / GIB
        parts.append(f"image file {gib:.1f} GiB = {image.size_bytes} bytes")
        sizes.append(gib)
    if not parts:
        return None
    return Rejection(
        "too_large",
        f"image is {max(sizes):g} GiB ({'; '.join(parts)}); cross-region copies from "
        f"{row.source_region} are limited to {limit} GiB (set in [limits] of the config)",
    )


def _check_request(row: Row, image: Image | None, config: Config, token: str) -> list[Rejection]:
    out: list[Rejection] = []
    name = copy_name_for(row, image)
    if name is not None:
        trouble = name_problem(name)
        if trouble and row.name:
            out.append(Rejection("name_invalid", f"name {trouble}"))
        elif trouble:
            out.append(
                Rejection(
                    "name_invalid",
                    f"the source image's name cannot be the copy's name: {trouble}; give the "
                    "copy a name in the name column",
                )
            )
    trouble = description_problem(row.description, token)
    if trouble:
        out.append(Rejection("description_invalid", f"description {trouble}"))
    if not agency_for(row, config):
        out.append(
            Rejection(
                "no_agency",
                "no agency_name in the row nor in the config; set agency_name in the row or "
                "[defaults] agency_name in the config (the IMS console usually creates one "
                "named ims_admin_agency)",
            )
        )
    return out


def source_flags(image: Image) -> list[Flag]:
    """Warnings that do not stop the copy."""
    flags: list[Flag] = []
    if image.os_type.strip().lower() == "windows":
        flags.append(
            Flag(
                "windows",
                "image is a Windows image; Huawei Cloud's English documentation says Windows "
                "images can no longer be copied across regions, so the cloud may refuse it",
            )
        )
    return flags


def check_target(
    row: Row,
    copy_name: str,
    token: str,
    target_images_by_name: Mapping[str, Sequence[Image]],
) -> TargetVerdict:
    """Absent, present (this item's copy, found by its token) or conflict (someone else's).

    Of this item's copies, an active one is preferred, then one still being made; ``killed``
    and ``deleted`` ones are never adopted and come back in ``stale``. An image with the name
    but without the token is a conflict unless it is deleted.
    """
    candidates = [
        image for image in target_images_by_name.get(copy_name, ()) if image.name == copy_name
    ]
    ours = [image for image in candidates if token in image.description]
    stale = tuple(image for image in ours if image.status in DEAD_STATUSES)
    live = sorted(
        (image for image in ours if image.status not in DEAD_STATUSES),
        key=lambda image: image.status != ACTIVE,
    )
    if live:
        return TargetVerdict(
            TargetKind.PRESENT, image=live[0], stale=stale, duplicates=tuple(live[1:])
        )
    others = [image for image in candidates if image not in ours and image.status != DELETED]
    if others:
        other = others[0]
        message = (
            f"{row.target_region} already has an image named {copy_name!r} (id {other.id}, "
            f"status {other.status}) that this item did not create (its description lacks "
            f"[{token}]); it is never adopted nor copied over: give the copy another name in "
            "the name column, or rename or delete that image"
        )
        return TargetVerdict(
            TargetKind.CONFLICT,
            image=other,
            stale=stale,
            rejection=Rejection("name_conflict", message),
        )
    return TargetVerdict(TargetKind.ABSENT, stale=stale)
