"""The checkpoint's item format (state/codec.py): the same JSON as ever, read back whole, and
old or newer lines still read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from orchestrator.core.model import Item, Phase, Row
from orchestrator.state.codec import item_from_dict, item_to_dict

ROW = Row(
    line=7,
    tenant="prod",
    image_id="img-7",
    source_region="cn-north-4",
    target_region="cn-east-3",
    name="web",
    description="d",
    project_name="p",
    source_project_name="sp",
    agency_name="ag",
    vault_id="v",
    priority=3,
    tags="a=1",
)
FULL = Item(
    row=ROW,
    phase=Phase.VERIFYING,
    attempt=2,
    detail="copied",
    listed=False,
    job_id="job-1",
    target_image_id="new-1",
    copy_name="web",
    size_bytes=1024,
    submitted_at=1.5,
    finished_at=3.0,
    polls=False,  # equal to the default 0, but not of its type: written, not left out
    source_facts='{"min_ram":0}',
    verify="ok",
    carried="tags:1",
    notes="n",
)
# The line every version so far writes for FULL (fields at their default are left out).
FULL_TEXT = (
    '{"row":{"line":7,"tenant":"prod","image_id":"img-7","source_region":"cn-north-4",'
    '"target_region":"cn-east-3","name":"web","description":"d","project_name":"p",'
    '"source_project_name":"sp","agency_name":"ag","vault_id":"v","priority":3,"tags":"a=1"},'
    '"phase":"verifying","attempt":2,"detail":"copied","listed":false,"job_id":"job-1",'
    '"target_image_id":"new-1","copy_name":"web","size_bytes":1024,"submitted_at":1.5,'
    '"finished_at":3.0,"polls":false,"source_facts":"{\\"min_ram\\":0}","verify":"ok",'
    '"carried":"tags:1","notes":"n"}'
)


def dumps(item: Item) -> str:
    return json.dumps(item_to_dict(item), separators=(",", ":"))


def test_an_item_is_written_as_it_always_was() -> None:
    assert dumps(FULL) == FULL_TEXT
    fresh = Item(Row(line=1, tenant="t", image_id="i", source_region="a", target_region="b"))
    assert dumps(fresh) == (
        '{"row":{"line":1,"tenant":"t","image_id":"i","source_region":"a","target_region":"b"},'
        '"phase":"pending","attempt":1}'
    )


def test_every_field_comes_back() -> None:
    back = item_from_dict(json.loads(FULL_TEXT))
    assert back == FULL
    assert type(back) is Item
    assert type(back.row) is Row
    assert back.polls is False
    assert type(back.phase) is Phase
    for field in dataclasses.fields(Item):
        assert getattr(back, field.name) == getattr(FULL, field.name)
    assert back.key == FULL.key == "prod/img-7/cn-east-3"
    tagged = dataclasses.replace(FULL, row=dataclasses.replace(ROW, line_tag="#line9"))
    assert item_from_dict(json.loads(dumps(tagged))).key == "prod/img-7/cn-east-3#line9"


def test_an_item_read_back_is_still_a_frozen_value() -> None:
    back = item_from_dict(json.loads(FULL_TEXT))
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.polls = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.row.tenant = "other"  # type: ignore[misc]
    assert back.advance(Phase.CARRYING, verify="ok").phase == Phase.CARRYING
    assert hash(back.row) == hash(ROW)


def test_an_old_line_takes_the_defaults_of_the_fields_it_lacks() -> None:
    """A line written before the columns and steps after the copy existed."""
    old = {
        "row": {"line": 3, "tenant": "t", "image_id": "i", "source_region": "a",
                "target_region": "b"},
        "phase": "succeeded",
        "attempt": 1,
        "job_id": "j",
    }  # fmt: skip
    item = item_from_dict(old)
    assert item.phase == Phase.SUCCEEDED
    assert item.job_id == "j"
    assert item.row.tags == ""
    assert item.row.line_tag == ""
    assert item.row.problem == ""
    assert item.source_facts == ""
    assert item.verify == ""
    assert item.polls == 0
    assert item == Item(row=Row(3, "t", "i", "a", "b"), phase=Phase.SUCCEEDED, job_id="j")


def test_keys_it_does_not_know_are_left_out() -> None:
    """A newer version's field, or a key someone wrote into the row, is not read."""
    data = json.loads(FULL_TEXT)
    data["from_the_future"] = 1
    data["row"]["key"] = "not/the/key"
    data["row"]["_identity"] = "not/the/key"
    back = item_from_dict(data)
    assert back == FULL
    assert back.key == "prod/img-7/cn-east-3"


def test_a_missing_identity_field_is_an_error() -> None:
    data = json.loads(FULL_TEXT)
    del data["row"]["line"]
    with pytest.raises(KeyError):
        item_from_dict(data)


@pytest.mark.parametrize("tag", ["", "#line9"])
def test_a_read_row_has_the_key_a_new_one_makes(tag: str) -> None:
    """The key made as the checkpoint is read is ``Row.key``'s (a refused line's tag too)."""
    item = dataclasses.replace(FULL, row=dataclasses.replace(ROW, line_tag=tag))
    back = item_from_dict(json.loads(dumps(item)))
    fresh = dataclasses.replace(back.row)  # made by __init__: its key made when asked
    assert back.key == fresh.key == f"prod/img-7/cn-east-3{tag}"
