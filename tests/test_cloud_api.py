"""An answer read into a Job or an Image: the same value, field for field, as the plain reading
through the dataclass's ``__init__`` (``from_api`` fills the instance without it)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.cloud import FACT_KEYS, Image, Job, _tags, _text

_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "0", "40", "true", "True", "FALSE", "x", "12.5", "success"])
    | st.text(max_size=5)
    | st.lists(st.sampled_from(["a.b", 3, 1.5, None, ["x"]]), max_size=3)
)
_IMAGE_KEYS = [
    "id", "name", "status", "__imagetype", "visibility", "disk_format", "virtual_env_type",
    "min_disk", "__image_size", "__system__cmkid", "__system_encrypted", "__system__encrypted",
    "__whole_image", "__os_type", "__description", "description", "created_at", "tags",
    "enterprise_project_id", *FACT_KEYS,
]  # fmt: skip
_JOB_KEYS = ["job_id", "status", "error_code", "fail_reason", "entities"]
_ENTITY_KEYS = ["process_percent", "image_id", "error_code", "error"]


def _facts(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The facts as read by lowering every text (the oracle)."""
    facts = []
    for key in FACT_KEYS:
        value = raw.get(key)
        if value is not None:
            text = str(value)
            lowered = text.lower()
            facts.append((key, lowered if lowered in ("true", "false") else text))
    return tuple(facts)


def _image_by_init(raw: Mapping[str, Any]) -> Image:
    """The reading of an image before ``from_api`` skipped ``__init__`` (the oracle)."""
    size_text = _text(raw, "__image_size")
    try:
        size: int | None = int(size_text) if size_text else None
    except ValueError:
        size = None
    try:
        min_disk = int(raw.get("min_disk") or 0)
    except (TypeError, ValueError, OverflowError):
        min_disk = 0
    return Image(
        id=_text(raw, "id"),
        name=_text(raw, "name"),
        status=_text(raw, "status"),
        imagetype=_text(raw, "__imagetype"),
        visibility=_text(raw, "visibility"),
        disk_format=_text(raw, "disk_format"),
        virtual_env_type=_text(raw, "virtual_env_type"),
        min_disk=min_disk,
        size_bytes=size,
        cmk_id=_text(raw, "__system__cmkid"),
        encrypted_flag=_text(raw, "__system_encrypted") or _text(raw, "__system__encrypted"),
        whole_image=_text(raw, "__whole_image").lower() == "true",
        os_type=_text(raw, "__os_type"),
        description=_text(raw, "__description") or _text(raw, "description"),
        created_at=_text(raw, "created_at"),
        tags=_tags(raw.get("tags")),
        tags_listed=isinstance(raw.get("tags"), list),
        enterprise_project_id=_text(raw, "enterprise_project_id"),
        facts=_facts(raw),
    )


def _job_by_init(raw: Mapping[str, Any]) -> Job:
    entities = raw.get("entities") or {}
    if not isinstance(entities, Mapping):
        entities = {}
    progress = entities.get("process_percent")
    try:
        percent = float(progress) if progress is not None else None
    except (TypeError, ValueError, OverflowError):
        percent = None
    if percent is not None and not math.isfinite(percent):
        percent = None
    error_code = raw.get("error_code") or entities.get("error_code")
    reason = raw.get("fail_reason") or entities.get("error")
    return Job(
        job_id=_text(raw, "job_id"),
        status=_text(raw, "status").upper(),
        progress=percent,
        image_id=entities.get("image_id") or None,
        error_code=str(error_code) if error_code else None,
        fail_reason=str(reason) if reason else None,
    )


def _same_instance(made: object, expected: object) -> None:
    """Equal, field for field, with nothing more and nothing left to a class default."""
    assert made == expected
    assert type(made) is type(expected)
    assert vars(made) == vars(expected)
    assert list(vars(made)) == [f.name for f in dataclasses.fields(expected)]  # type: ignore[arg-type]
    assert _unhashable(made) == _unhashable(expected)
    assert _unhashable(expected) or hash(made) == hash(expected)
    assert dataclasses.replace(made) == made  # type: ignore[type-var]


def _unhashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_IMAGE_KEYS), _VALUES))
def test_an_image_reads_as_its_init_would_make_it(raw: dict[str, Any]) -> None:
    _same_instance(Image.from_api(raw), _image_by_init(raw))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_JOB_KEYS),
        _VALUES | st.dictionaries(st.sampled_from(_ENTITY_KEYS), _VALUES),
    )
)
def test_a_job_reads_as_its_init_would_make_it(raw: dict[str, Any]) -> None:
    _same_instance(Job.from_api(raw), _job_by_init(raw))


def test_an_instance_made_without_init_is_still_frozen() -> None:
    image = Image.from_api({"id": "i", "name": "n", "status": "active"})
    try:
        image.name = "other"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("an Image from the API must stay frozen")


@pytest.mark.parametrize("text", ['{"min_disk": 1e999}', '{"min_disk": Infinity}'])
def test_an_infinite_min_disk_reads_as_none_given(text: str) -> None:
    """JSON numbers beyond a float (1e999) and Python's json ``Infinity`` read as inf: no
    OverflowError out of a listing (Hypothesis found ``min_disk: inf``)."""
    assert Image.from_api(json.loads(text)).min_disk == 0


@pytest.mark.parametrize(
    "percent", ["1e999", "Infinity", "NaN", "1" + "0" * 400], ids=["1e999", "inf", "nan", "bigint"]
)
def test_a_progress_that_is_no_finite_number_reads_as_unknown(percent: str) -> None:
    """An int beyond a float raises OverflowError in float(); inf and NaN would mislead the
    polling schedule: all read as no progress known."""
    entities = json.loads(f'{{"process_percent": {percent}}}')
    raw = {"job_id": "j", "status": "RUNNING", "entities": entities}
    assert Job.from_api(raw).progress is None
