"""Preflight rules: each documented constraint rejects with numbers; the target verdict adopts
only this item's copy and never someone else's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

import pytest

from orchestrator.config import Config
from orchestrator.core.cloud import Image
from orchestrator.core.model import Row, item_token
from orchestrator.core.rules import (
    Flag,
    Rejection,
    TargetKind,
    agency_for,
    check_source,
    check_target,
    copy_name_for,
    source_flags,
)

CONFIG = Config(agency_name="ims_admin_agency")
ROW = Row(
    line=2,
    tenant="default",
    image_id="img-1",
    source_region="cn-north-4",
    target_region="cn-east-3",
)
TOKEN = item_token(ROW.key)
IMAGE = Image(id="img-1", name="web-01", status="active", min_disk=40, size_bytes=10 * 2**30)


def codes(rejections: Sequence[Rejection]) -> list[str]:
    return [rejection.code for rejection in rejections]


def check(image: Image | None = IMAGE, row: Row = ROW, config: Config = CONFIG) -> list[Rejection]:
    return check_source(row, image, config, token=item_token(row.key))


def only(rejections: Sequence[Rejection], code: str) -> Rejection:
    assert codes(rejections) == [code], rejections
    return rejections[0]


# --- check_source ----------------------------------------------------------------------------


def test_eligible_image_passes() -> None:
    """An active private unencrypted image within limits has no rejection."""
    assert check() == []


def test_same_region_is_rejected() -> None:
    """Target equal to source is refused with the region named."""
    row = replace(ROW, target_region="cn-north-4")
    rejection = only(check(row=row), "same_region")
    assert "(cn-north-4)" in rejection.message


def test_missing_image_is_not_found() -> None:
    """No image in the source listing: not_found, naming image, region and project."""
    rejection = only(check(image=None), "not_found")
    assert "img-1" in rejection.message
    assert "project cn-north-4 in cn-north-4" in rejection.message


def test_missing_image_still_reports_row_problems() -> None:
    """Row-level problems (agency) are reported alongside not_found."""
    assert codes(check(image=None, config=Config())) == ["not_found", "no_agency"]


@pytest.mark.parametrize("status", ["queued", "saving", "killed", "deleted", ""])
def test_inactive_image_is_rejected(status: str) -> None:
    """Only active images are copied; the status is named."""
    rejection = only(check(replace(IMAGE, status=status)), "not_active")
    assert (status or "unknown") in rejection.message


@pytest.mark.parametrize("imagetype", ["gold", "shared", "market", ""])
def test_non_private_image_is_rejected(imagetype: str) -> None:
    """Public, shared and market images are not the tenant's to copy."""
    only(check(replace(IMAGE, imagetype=imagetype)), "not_private")


def test_cmk_encrypted_image_is_rejected() -> None:
    """A KMS key id means encrypted."""
    rejection = only(check(replace(IMAGE, cmk_id="kms-key-1")), "encrypted")
    assert "KMS key kms-key-1" in rejection.message


@pytest.mark.parametrize("flag", ["1", "true", "True"])
def test_encrypted_flag_is_rejected(flag: str) -> None:
    """The (unverified) __system_encrypted flag also means encrypted."""
    only(check(replace(IMAGE, encrypted_flag=flag)), "encrypted")


@pytest.mark.parametrize("flag", ["", "0", "false"])
def test_false_encrypted_flag_passes(flag: str) -> None:
    """A false flag without a key is not encrypted."""
    assert check(replace(IMAGE, encrypted_flag=flag)) == []


def test_iso_disk_format_is_rejected() -> None:
    """disk_format iso means an ISO image."""
    only(check(replace(IMAGE, disk_format="iso")), "iso")


def test_iso_env_type_is_rejected() -> None:
    """virtual_env_type IsoImage means an ISO image."""
    only(check(replace(IMAGE, virtual_env_type="IsoImage")), "iso")


def test_min_disk_over_source_limit_is_rejected_with_numbers() -> None:
    """min_disk over the source region's 300 GiB: the documented message."""
    rejection = only(check(replace(IMAGE, min_disk=412)), "too_large")
    assert rejection.message.startswith(
        "image is 412 GiB (min_disk 412 GB); cross-region copies from cn-north-4 are limited "
        "to 300 GiB"
    )


def test_image_file_over_limit_is_rejected_with_bytes() -> None:
    """__image_size over limit x 2^30 bytes is rejected, with GiB and bytes."""
    size = 301 * 2**30
    rejection = only(check(replace(IMAGE, size_bytes=size)), "too_large")
    assert f"image file 301.0 GiB = {size} bytes" in rejection.message


def test_exactly_at_limit_passes() -> None:
    """300 GB min_disk and 300 GiB of bytes are within a 300 GiB limit."""
    assert check(replace(IMAGE, min_disk=300, size_bytes=300 * 2**30)) == []


def test_limit_is_the_source_regions() -> None:
    """From a 128 GiB region to a 300 GiB region, 200 GB is too large."""
    row = replace(ROW, source_region="ap-southeast-1", target_region="cn-north-4")
    rejection = only(check(replace(IMAGE, min_disk=200), row=row), "too_large")
    assert "from ap-southeast-1 are limited to 128 GiB" in rejection.message


def test_limit_from_300_region_to_128_region_allows_200() -> None:
    """From a 300 GiB region to a 128 GiB region, 200 GB is allowed (judged on the source)."""
    row = replace(ROW, target_region="ap-southeast-1")
    assert check(replace(IMAGE, min_disk=200), row=row) == []


def test_configured_limit_applies() -> None:
    """[limits] from the config changes the judgement."""
    config = replace(CONFIG, size_limits_gib=MappingProxyType({"cn-north-4": 50}))
    rejection = only(check(replace(IMAGE, min_disk=60), config=config), "too_large")
    assert "limited to 50 GiB" in rejection.message


def test_invalid_source_name_is_rejected_when_used() -> None:
    """Without a name column, a source name IMS would refuse is named with the fix."""
    rejection = only(check(replace(IMAGE, name="web#01")), "name_invalid")
    assert "the source image's name cannot be the copy's name" in rejection.message
    assert "name column" in rejection.message


def test_row_name_replaces_invalid_source_name() -> None:
    """A valid name column makes the source's odd name irrelevant."""
    assert check(replace(IMAGE, name="web#01"), row=replace(ROW, name="web-01")) == []


def test_invalid_row_name_is_rejected() -> None:
    """A row name IMS would refuse is rejected (also when the list was not re-checked)."""
    rejection = only(check(row=replace(ROW, name=" web")), "name_invalid")
    assert rejection.message.startswith('name " web" starts or ends with a space')


def test_too_long_description_is_rejected_with_maximum() -> None:
    """A description that would pass 1024 with the token says the maximum."""
    rejection = only(check(row=replace(ROW, description="d" * 994)), "description_invalid")
    assert "at most 993 are allowed" in rejection.message


def test_description_with_angle_bracket_is_rejected() -> None:
    """`<` in the description is refused."""
    only(check(row=replace(ROW, description="<b>")), "description_invalid")


def test_no_agency_anywhere_is_rejected() -> None:
    """Neither row nor config names an agency: rejected with the fix."""
    rejection = only(check(config=Config()), "no_agency")
    assert "[defaults] agency_name" in rejection.message


def test_row_agency_is_enough() -> None:
    """An agency in the row needs none in the config."""
    assert check(row=replace(ROW, agency_name="my_agency"), config=Config()) == []


def test_whole_image_without_vault_is_rejected() -> None:
    """A full-ECS image needs vault_id in the target region."""
    rejection = only(check(replace(IMAGE, whole_image=True)), "whole_image_needs_vault")
    assert "cn-east-3" in rejection.message


def test_whole_image_with_vault_passes() -> None:
    """With a vault_id, a full-ECS image may be copied."""
    assert check(replace(IMAGE, whole_image=True), row=replace(ROW, vault_id="v-1")) == []


def test_every_problem_is_reported_at_once() -> None:
    """Several problems give several rejections, in a stable order."""
    image = replace(IMAGE, status="saving", cmk_id="k", disk_format="iso", min_disk=500)
    assert codes(check(image)) == ["not_active", "encrypted", "iso", "too_large"]


def test_rejection_str_has_code_and_message() -> None:
    """str() of a rejection is `code: message`."""
    assert str(Rejection("iso", "is ISO")) == "iso: is ISO"


# --- flags and helpers -----------------------------------------------------------------------


def test_windows_image_is_flagged_not_rejected() -> None:
    """Windows images get a warning flag but pass the rules."""
    image = replace(IMAGE, os_type="Windows")
    assert check(image) == []
    flags = source_flags(image)
    assert [flag.code for flag in flags] == ["windows"]
    assert "Windows images can no longer be copied" in flags[0].message


def test_linux_image_has_no_flag() -> None:
    """A Linux image carries no flag."""
    assert source_flags(IMAGE) == []


def test_flag_str() -> None:
    """str() of a flag is `code: message`."""
    assert str(Flag("windows", "w")) == "windows: w"


def test_copy_name_prefers_row_name() -> None:
    """The copy is named by the row, else by the source image."""
    assert copy_name_for(ROW, IMAGE) == "web-01"
    assert copy_name_for(replace(ROW, name="other"), IMAGE) == "other"
    assert copy_name_for(ROW, None) is None


def test_agency_prefers_row() -> None:
    """The row's agency wins over the config's."""
    assert agency_for(replace(ROW, agency_name="row_agency"), CONFIG) == "row_agency"
    assert agency_for(ROW, CONFIG) == "ims_admin_agency"


# --- check_target ----------------------------------------------------------------------------


def target(*images: Image) -> dict[str, list[Image]]:
    out: dict[str, list[Image]] = {}
    for image in images:
        out.setdefault(image.name, []).append(image)
    return out


def ours(image_id: str, status: str) -> Image:
    return Image(id=image_id, name="web-01", status=status, description=f"x [{TOKEN}]")


def theirs(image_id: str, status: str = "active") -> Image:
    return Image(id=image_id, name="web-01", status=status, description="made by hand")


def test_nothing_with_the_name_is_absent() -> None:
    """An empty target: go ahead."""
    verdict = check_target(ROW, "web-01", TOKEN, {})
    assert verdict.kind is TargetKind.ABSENT
    assert verdict.image is None
    assert verdict.rejection is None


def test_active_copy_with_token_is_present_and_succeeded() -> None:
    """Our active copy is adopted as a success."""
    verdict = check_target(ROW, "web-01", TOKEN, target(ours("new-1", "active")))
    assert verdict.kind is TargetKind.PRESENT
    assert verdict.image is not None
    assert verdict.image.id == "new-1"
    assert verdict.succeeded
    assert not verdict.in_progress


@pytest.mark.parametrize("status", ["queued", "saving"])
def test_copy_in_progress_is_present_not_succeeded(status: str) -> None:
    """Our queued/saving copy is adopted as in progress."""
    verdict = check_target(ROW, "web-01", TOKEN, target(ours("new-1", status)))
    assert verdict.kind is TargetKind.PRESENT
    assert verdict.in_progress
    assert not verdict.succeeded


@pytest.mark.parametrize("status", ["killed", "deleted"])
def test_dead_copy_is_never_adopted_but_reported_stale(status: str) -> None:
    """A killed/deleted copy of ours is not a success: absent, listed as stale."""
    dead = ours("dead-1", status)
    verdict = check_target(ROW, "web-01", TOKEN, target(dead))
    assert verdict.kind is TargetKind.ABSENT
    assert verdict.stale == (dead,)
    assert not verdict.succeeded


def test_live_copy_preferred_over_killed_one() -> None:
    """With a killed and an active copy of ours, the active one is adopted."""
    dead, alive = ours("dead-1", "killed"), ours("new-1", "active")
    verdict = check_target(ROW, "web-01", TOKEN, target(dead, alive))
    assert verdict.image == alive
    assert verdict.stale == (dead,)


def test_active_copy_preferred_over_saving_duplicate() -> None:
    """Two live copies of ours: the active one is adopted, the other is a duplicate."""
    saving, active = ours("a", "saving"), ours("b", "active")
    verdict = check_target(ROW, "web-01", TOKEN, target(saving, active))
    assert verdict.image == active
    assert verdict.duplicates == (saving,)


def test_same_name_without_token_is_a_conflict() -> None:
    """Someone else's image with the name: a name_conflict rejection, never adopted."""
    other = theirs("hand-1")
    verdict = check_target(ROW, "web-01", TOKEN, target(other))
    assert verdict.kind is TargetKind.CONFLICT
    assert verdict.image == other
    assert not verdict.succeeded
    assert verdict.rejection is not None
    assert verdict.rejection.code == "name_conflict"
    assert "cn-east-3 already has an image named 'web-01' (id hand-1" in verdict.rejection.message
    assert TOKEN in verdict.rejection.message


def test_token_of_another_item_is_a_conflict() -> None:
    """A copy made by ims-migrate for another item is not ours."""
    other_token = item_token(replace(ROW, image_id="img-2").key)
    image = Image(id="x", name="web-01", status="active", description=f"[{other_token}]")
    assert check_target(ROW, "web-01", TOKEN, target(image)).kind is TargetKind.CONFLICT


def test_our_copy_wins_over_a_same_named_stranger() -> None:
    """With our copy present, a stranger of the same name does not block adoption."""
    verdict = check_target(ROW, "web-01", TOKEN, target(theirs("hand-1"), ours("new-1", "active")))
    assert verdict.kind is TargetKind.PRESENT


def test_deleted_stranger_is_no_conflict() -> None:
    """A deleted image of the name blocks nothing."""
    verdict = check_target(ROW, "web-01", TOKEN, target(theirs("old", "deleted")))
    assert verdict.kind is TargetKind.ABSENT


def test_killed_stranger_is_a_conflict() -> None:
    """A killed image of the name, not ours, still holds the name: conflict."""
    assert check_target(ROW, "web-01", TOKEN, target(theirs("k", "killed"))).kind == "conflict"


def test_other_names_are_ignored() -> None:
    """Images filed under the name but named differently do not count."""
    stray = Image(id="s", name="web-010", status="active", description=f"[{TOKEN}]")
    verdict = check_target(ROW, "web-01", TOKEN, {"web-01": [stray]})
    assert verdict.kind is TargetKind.ABSENT
