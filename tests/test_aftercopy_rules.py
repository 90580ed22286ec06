"""After the copy, the pure parts: comparing, the tags column, the config sections."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.core.aftercopy import differences, parse_tags, ram_changes
from orchestrator.core.cloud import Image
from tests.inprocess import LocalCloud
from tests.test_config import error_of, load_text
from tests.test_manifest import HEADER, load_csv, only_problem


def image(**raw: object) -> Image:
    return Image.from_api({"id": "i", "name": "n", "status": "active", **raw})


def test_checksum_is_compared_only_when_both_sides_have_one() -> None:
    """An empty checksum on either side is no difference; two different ones are."""
    copy = image(checksum="", min_disk=40, __description="[t]")
    assert differences({"checksum": "a", "min_disk": "40"}, copy, name="n", description="[t]") == []
    other = image(checksum="b", min_disk=40, __description="[t]")
    assert differences({"checksum": "a", "min_disk": "40"}, other, name="n", description="[t]") == [
        "checksum: source a, copy b"
    ]


def test_name_and_description_are_compared_with_what_was_asked() -> None:
    """The copy's name and description must be those sent; ignore names them off."""
    copy = image(__description="other")
    found = differences({}, copy, name="wanted", description="[t]")
    assert [text.split(":")[0] for text in found] == ["name", "description"]
    assert differences({}, copy, name="x", description="y", ignore=("name", "description")) == []


def test_booleans_compare_whatever_their_case() -> None:
    """__support_arm "True" and "true" are the same fact."""
    copy = image(__support_arm="True", __description="d")
    assert differences({"__support_arm": "true"}, copy, name="n", description="d") == []


def test_tags_column_parses_and_names_its_problems() -> None:
    """key=value;key=value; a part without = or a key given twice is named."""
    assert parse_tags("a=1; b = two ;") == ({"a": "1", "b": "two"}, None)
    assert parse_tags("a")[1] == "'a' is not key=value (write key=value;key=value)"
    assert parse_tags("a=1;a=2")[1] == "tag 'a' is given twice"


def test_ram_changes_are_only_those_that_differ() -> None:
    """min_ram equal, max_ram missing on the copy: only max_ram is patched."""
    change = ram_changes({"min_ram": "0", "max_ram": "4096"}, image(min_ram=0))
    assert change.changes == {"max_ram": 4096}


def test_a_bad_tags_cell_is_a_row_problem(tmp_path: Path) -> None:
    """The list's tags column is checked like every other: file:line: tags: what is wrong."""
    manifest = load_csv(tmp_path, HEADER + ",tags", "img-1,cn-north-4,cn-east-3,env")
    problem = only_problem(manifest)
    assert (problem.line, problem.column) == (2, "tags")


def test_carry_and_verify_sections_are_read(tmp_path: Path) -> None:
    """[carry] tags/ram booleans and [verify] ignore, with defaults on."""
    config = load_text(tmp_path, '[carry]\nram = false\n[verify]\nignore = ["checksum"]\n')
    after = config.after
    assert (after.carry_tags, after.carry_ram, after.verify_ignore) == (True, False, ("checksum",))


def test_an_unknown_verify_field_is_named(tmp_path: Path) -> None:
    """[verify] ignore names only compared fields, with a suggestion."""
    assert "did you mean checksum?" in error_of(tmp_path, '[verify]\nignore = ["chcksum"]\n')


def test_plan_says_what_will_be_carried(local_cloud: LocalCloud) -> None:
    """plan: a row to copy says its tags and RAM limits are carried (nothing: no note)."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.row("t0", 1, tags=["env.prod", "team.a"], min_ram=2048)
    cloud.row("t0", 1)
    cloud.start()
    done = cloud.main("plan", str(cloud.list_path), "--config", str(cloud.config_path),
                      "--format", "json")  # fmt: skip
    reasons = [row["reason"] for row in json.loads(done.stdout)["rows"]]
    assert reasons == [
        "after the copy: verified, then carries tags:2,min_ram",
        None,
    ]
