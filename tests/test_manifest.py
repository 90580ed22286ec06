"""The migration list: valid rows in, every bad row named at file:line: column."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from orchestrator.config import Config, TenantConfig
from orchestrator.core.model import Row, item_key, item_token
from orchestrator.core.request_text import (
    DESCRIPTION_MAX,
    describe_copy,
    description_max,
    description_problem,
    name_problem,
)
from orchestrator.manifest import Manifest, ManifestError, Problem, load_manifest

HEADER = "image_id,source_region,target_region"
CONFIG = Config(
    tenants=MappingProxyType({"prod": TenantConfig(name="prod")}),
    extra_regions=("lab-1",),
    source=Path("ims-migrate.toml"),
)


def load_csv(folder: Path, *lines: str, config: Config = CONFIG) -> Manifest:
    path = folder / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_manifest(path, config)


def load_jsonl(folder: Path, *objects: object) -> Manifest:
    path = folder / "list.jsonl"
    lines = [obj if isinstance(obj, str) else json.dumps(obj) for obj in objects]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_manifest(path, CONFIG)


def only_problem(manifest: Manifest) -> Problem:
    assert len(manifest.problems) == 1, manifest.problems
    return manifest.problems[0]


def whole_file_error(path: Path, config: Config = CONFIG) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, config)
    return str(caught.value)


# --- Problem ---------------------------------------------------------------------------------


def test_problem_reads_file_line_column_message() -> None:
    """A problem prints as file:line: column: message."""
    problem = Problem(Path("list.csv"), 7, "priority", "bad")
    assert str(problem) == "list.csv:7: priority: bad"


def test_problem_without_column_omits_it() -> None:
    """A whole-line problem prints as file:line: message."""
    assert str(Problem(Path("l.jsonl"), 3, "", "not valid JSON")) == "l.jsonl:3: not valid JSON"


# --- valid lists -----------------------------------------------------------------------------


def test_minimal_csv_row_gets_defaults(tmp_path: Path) -> None:
    """Only the required columns: defaults fill the rest."""
    manifest = load_csv(tmp_path, HEADER, "img-1,cn-north-4,cn-east-3")
    assert manifest.problems == []
    assert manifest.rows == [
        Row(line=2, tenant="default", image_id="img-1", source_region="cn-north-4",
            target_region="cn-east-3")
    ]  # fmt: skip


def test_all_columns_are_read(tmp_path: Path) -> None:
    """Every documented column lands in the row."""
    manifest = load_csv(
        tmp_path,
        "image_id,source_region,target_region,name,description,project_name,"
        "source_project_name,agency_name,tenant,vault_id,priority",
        "img-1,cn-north-4,cn-east-3,web 01,the web tier,cn-east-3_sub,cn-north-4_a,"
        "ims_admin_agency,prod,vault-9,-3",
    )
    row = manifest.rows[0]
    assert row.name == "web 01"
    assert row.description == "the web tier"
    assert row.project_name == "cn-east-3_sub"
    assert row.source_project_name == "cn-north-4_a"
    assert row.agency_name == "ims_admin_agency"
    assert row.tenant == "prod"
    assert row.vault_id == "vault-9"
    assert row.priority == -3


def test_empty_tenant_cell_means_default(tmp_path: Path) -> None:
    """An empty tenant cell is the default tenant."""
    manifest = load_csv(tmp_path, f"{HEADER},tenant", "img-1,cn-north-4,cn-east-3,")
    assert manifest.rows[0].tenant == "default"


def test_bom_and_crlf_are_tolerated(tmp_path: Path) -> None:
    """A spreadsheet export (BOM, CRLF) reads like a plain file."""
    path = tmp_path / "list.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\r\nimg-1,cn-north-4,cn-east-3\r\n".encode())
    manifest = load_manifest(path, CONFIG)
    assert [row.image_id for row in manifest.rows] == ["img-1"]
    assert manifest.problems == []


def test_header_is_case_and_space_insensitive(tmp_path: Path) -> None:
    """`Image_ID , Source_Region` is understood."""
    manifest = load_csv(
        tmp_path, "Image_ID , Source_Region,TARGET_REGION", "i,cn-north-4,cn-east-3"
    )
    assert len(manifest.rows) == 1


def test_identifiers_are_trimmed(tmp_path: Path) -> None:
    """Spaces after commas around ids and regions do not matter."""
    manifest = load_csv(tmp_path, HEADER, "img-1, cn-north-4 , cn-east-3")
    assert manifest.rows[0].source_region == "cn-north-4"


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    """Blank lines and `,,` lines are skipped; line numbers stay physical."""
    manifest = load_csv(tmp_path, HEADER, "", ",,", "img-1,cn-north-4,cn-north-4")
    assert only_problem(manifest).line == 4


def test_multiline_quoted_value_is_numbered_by_its_first_line(tmp_path: Path) -> None:
    """A record spanning lines 2-3 is line 2; the next record is line 4."""
    manifest = load_csv(
        tmp_path,
        f"{HEADER},description",
        'img-1,cn-north-4,cn-east-3,"two',
        'lines"',
        "img-2,cn-north-4,cn-north-4,",
    )
    assert [(p.line, p.column) for p in manifest.problems] == [
        (2, "description"),
        (4, "target_region"),
    ]


def test_region_from_config_extra_is_accepted(tmp_path: Path) -> None:
    """A private region listed in [regions] extra is a known region."""
    assert load_csv(tmp_path, HEADER, "img-1,lab-1,cn-east-3").problems == []


def test_jsonl_rows_are_read(tmp_path: Path) -> None:
    """JSON Lines: one object per line, blank lines ignored, integer priority accepted."""
    manifest = load_jsonl(
        tmp_path,
        {"image_id": "img-1", "source_region": "cn-north-4", "target_region": "cn-east-3"},
        "",
        {"image_id": "img-2", "source_region": "cn-north-4", "target_region": "cn-east-3",
         "priority": 5, "tenant": None},
    )  # fmt: skip
    assert [(row.line, row.image_id, row.priority) for row in manifest.rows] == [
        (1, "img-1", 0),
        (3, "img-2", 5),
    ]


def test_rows_keep_file_order(tmp_path: Path) -> None:
    """Valid rows come back in the order of the file."""
    manifest = load_csv(tmp_path, HEADER, "b,cn-north-4,cn-east-3", "a,cn-north-4,cn-east-3")
    assert [row.image_id for row in manifest.rows] == ["b", "a"]


# --- row problems ----------------------------------------------------------------------------


def test_same_region_message_reads_well(tmp_path: Path) -> None:
    """The documented example message, exactly."""
    manifest = load_csv(tmp_path, HEADER, "i,cn-north-4,cn-north-4")
    assert str(only_problem(manifest)) == (
        f"{tmp_path / 'list.csv'}:2: target_region: same as source_region (cn-north-4); "
        "a cross-region copy needs another region"
    )
    assert manifest.rows == []


def test_bad_row_does_not_stop_the_others(tmp_path: Path) -> None:
    """One bad row is excluded; the good ones go on."""
    manifest = load_csv(tmp_path, HEADER, "a,cn-north-4,cn-north-4", "b,cn-north-4,cn-east-3")
    assert [row.image_id for row in manifest.rows] == ["b"]
    assert len(manifest.problems) == 1


def test_missing_required_value(tmp_path: Path) -> None:
    """An empty required cell is named."""
    problem = only_problem(load_csv(tmp_path, HEADER, ",cn-north-4,cn-east-3"))
    assert (problem.line, problem.column) == (2, "image_id")
    assert problem.message.startswith("missing")


def test_short_row_is_missing_its_values(tmp_path: Path) -> None:
    """A row with fewer cells than the header lacks the trailing values."""
    problem = only_problem(load_csv(tmp_path, HEADER, "img-1,cn-north-4"))
    assert problem.column == "target_region"


def test_too_many_values_is_a_damaged_file(tmp_path: Path) -> None:
    """An unquoted comma (more cells than columns): the file is damaged, named at file:line."""
    with pytest.raises(ManifestError, match=r"list\.csv:2: .*has 4 values but the header has 3"):
        load_csv(tmp_path, HEADER, "img-1,cn-north-4,cn-east-3,extra")


def test_unknown_region_suggests_the_close_one(tmp_path: Path) -> None:
    """A misspelt region gets a suggestion and the way to add a private region."""
    problem = only_problem(load_csv(tmp_path, HEADER, "i,cn-nort-4,cn-east-3"))
    assert problem.column == "source_region"
    assert 'unknown region "cn-nort-4" (did you mean cn-north-4?' in problem.message
    assert "[regions] extra" in problem.message


def test_tenant_not_in_config_says_what_to_add(tmp_path: Path) -> None:
    """An unconfigured tenant is named with the section to add and the file."""
    problem = only_problem(load_csv(tmp_path, f"{HEADER},tenant", "i,cn-north-4,cn-east-3,qa"))
    assert problem.column == "tenant"
    assert "add a [tenants.qa] section" in problem.message
    assert "ims-migrate.toml" in problem.message


def test_tenant_without_any_config_file_says_to_create_one(tmp_path: Path) -> None:
    """With no config file at all, the message says to create one."""
    manifest = load_csv(tmp_path, f"{HEADER},tenant", "i,cn-north-4,cn-east-3,qa", config=Config())
    assert "create ims-migrate.toml with a [tenants.qa] section" in only_problem(manifest).message


def test_configured_tenant_is_accepted(tmp_path: Path) -> None:
    """A tenant with a config section is fine."""
    assert load_csv(tmp_path, f"{HEADER},tenant", "i,cn-north-4,cn-east-3,prod").problems == []


@pytest.mark.parametrize("value", ["high", "1.5", "1_000", "9999999999"])
def test_bad_priority(tmp_path: Path, value: str) -> None:
    """A priority that is not a (reasonable) whole number is named."""
    problem = only_problem(
        load_csv(tmp_path, f"{HEADER},priority", f"i,cn-north-4,cn-east-3,{value}")
    )
    assert problem.column == "priority"
    assert "is not a whole number" in problem.message


def test_jsonl_boolean_priority_is_a_problem(tmp_path: Path) -> None:
    """`"priority": true` is not a number."""
    manifest = load_jsonl(
        tmp_path,
        {"image_id": "i", "source_region": "cn-north-4", "target_region": "cn-east-3",
         "priority": True},
    )  # fmt: skip
    assert only_problem(manifest).message == "must be a string, not true/false"


def test_image_id_with_spaces_is_a_problem(tmp_path: Path) -> None:
    """An id with a space inside is not an image id."""
    problem = only_problem(load_csv(tmp_path, HEADER, "img 1,cn-north-4,cn-east-3"))
    assert problem.column == "image_id"


def test_several_problems_of_one_row_are_all_named(tmp_path: Path) -> None:
    """Each problem of a row is reported, not just the first."""
    manifest = load_csv(tmp_path, f"{HEADER},priority", ",cn-nort-4,cn-east-3,x")
    assert [p.column for p in manifest.problems] == ["image_id", "source_region", "priority"]


def test_duplicate_key_names_first_line(tmp_path: Path) -> None:
    """A later row with the same (tenant, image, target) names the first line."""
    manifest = load_csv(
        tmp_path,
        HEADER,
        "i,cn-north-4,cn-east-3",
        "j,cn-north-4,cn-east-3",
        "i,cn-east-2,cn-east-3",
    )
    problem = only_problem(manifest)
    assert (problem.line, problem.column) == (4, "image_id")
    assert problem.message.startswith("duplicate of line 2")
    assert [row.line for row in manifest.rows] == [2, 3]


def test_same_image_to_two_targets_is_not_a_duplicate(tmp_path: Path) -> None:
    """One image may go to several regions, or for several tenants."""
    manifest = load_csv(
        tmp_path,
        f"{HEADER},tenant",
        "i,cn-north-4,cn-east-3,",
        "i,cn-north-4,cn-south-1,",
        "i,cn-north-4,cn-east-3,prod",
    )
    assert manifest.problems == []


def test_default_tenant_spelled_out_is_still_a_duplicate(tmp_path: Path) -> None:
    """An empty tenant and `default` are the same tenant."""
    manifest = load_csv(
        tmp_path, f"{HEADER},tenant", "i,cn-north-4,cn-east-3,", "i,cn-north-4,cn-east-3,default"
    )
    assert only_problem(manifest).message.startswith("duplicate of line 2")


# --- name and description --------------------------------------------------------------------


def test_name_too_long(tmp_path: Path) -> None:
    """A 129-character name is refused with its length."""
    problem = only_problem(
        load_csv(tmp_path, f"{HEADER},name", f"i,cn-north-4,cn-east-3,{'a' * 129}")
    )
    assert problem.column == "name"
    assert "is 129 characters long; IMS allows at most 128" in problem.message


def test_name_with_trailing_space(tmp_path: Path) -> None:
    """Leading or trailing spaces are named, not trimmed."""
    problem = only_problem(load_csv(tmp_path, f"{HEADER},name", 'i,cn-north-4,cn-east-3,"web "'))
    assert "starts or ends with a space" in problem.message


def test_name_with_invalid_characters_lists_them(tmp_path: Path) -> None:
    """The characters IMS refuses are listed."""
    problem = only_problem(load_csv(tmp_path, f"{HEADER},name", "i,cn-north-4,cn-east-3,web#1/a"))
    assert 'has characters IMS does not accept: "#", "/"' in problem.message


@pytest.mark.parametrize("name", ["web-01", "a.b_c d", "镜像-1", "x" * 128])
def test_valid_names(name: str) -> None:
    """Letters, digits, - . _ space and Chinese, up to 128 characters."""
    assert name_problem(name) is None


def test_name_with_rare_ideograph_is_refused() -> None:
    """Only the common Chinese range U+4E00-U+9FA5 is accepted (the strict reading)."""
    assert name_problem("\u9fa5") is None
    assert name_problem("\u9fa6") is not None


def test_empty_name_cell_means_source_name(tmp_path: Path) -> None:
    """An empty name cell is "use the source image's name"."""
    manifest = load_csv(tmp_path, f"{HEADER},name", "i,cn-north-4,cn-east-3,")
    assert manifest.rows[0].name is None


@pytest.mark.parametrize(("text", "what"), [("a<b", "<"), ("a>b", ">"), ("a\r\nb", "carriage")])
def test_description_forbidden_characters(text: str, what: str) -> None:
    """<, > and line breaks are refused in a description."""
    trouble = description_problem(text, item_token("k"))
    assert trouble is not None
    assert what in trouble


def test_description_maximum_counts_the_token_suffix() -> None:
    """The user's description may take 1024 minus the 31-character suffix: 993."""
    token = item_token(item_key("default", "i", "cn-east-3"))
    assert len(token) == 28
    assert description_max(token) == DESCRIPTION_MAX - 31 == 993
    assert description_problem("x" * 993, token) is None
    trouble = description_problem("x" * 994, token)
    assert trouble is not None
    assert "is 994 characters long; at most 993 are allowed" in trouble


def test_too_long_description_in_list_says_the_maximum(tmp_path: Path) -> None:
    """The list names the exact maximum."""
    problem = only_problem(
        load_csv(tmp_path, f"{HEADER},description", f"i,cn-north-4,cn-east-3,{'d' * 1000}")
    )
    assert problem.column == "description"
    assert "at most 993 are allowed" in problem.message


def test_describe_copy_appends_token() -> None:
    """The description sent is the user's plus ` [token]`, or `[token]` alone."""
    row = Row(line=2, tenant="default", image_id="i", source_region="a", target_region="b")
    assert describe_copy(row, "ims-migrate:t") == "[ims-migrate:t]"
    described = replace(row, description="web")
    assert describe_copy(described, "ims-migrate:t") == "web [ims-migrate:t]"


def test_longest_allowed_description_fits_1024() -> None:
    """A description at the maximum gives exactly 1024 characters sent."""
    row = Row(line=2, tenant="default", image_id="i", source_region="a", target_region="b")
    token = item_token(row.key)
    full = replace(row, description="d" * description_max(token))
    assert len(describe_copy(full, token)) == DESCRIPTION_MAX


# --- JSON Lines problems ---------------------------------------------------------------------


def test_broken_json_line_is_a_damaged_file(tmp_path: Path) -> None:
    """A line that is not JSON: the whole list is refused, naming file:line."""
    with pytest.raises(ManifestError, match=r"list\.jsonl:1: not valid JSON: "):
        load_jsonl(
            tmp_path,
            '{"image_id": "i",',
            {"image_id": "j", "source_region": "cn-north-4", "target_region": "cn-east-3"},
        )


def test_json_line_must_be_an_object(tmp_path: Path) -> None:
    """A list on a line is not a row: the file is refused."""
    with pytest.raises(ManifestError, match="must be a JSON object"):
        load_jsonl(tmp_path, "[1, 2]")


def test_json_duplicate_key_is_a_problem(tmp_path: Path) -> None:
    """`image_id` twice in one object is ambiguous: named."""
    manifest = load_jsonl(
        tmp_path,
        '{"image_id": "a", "image_id": "b", "source_region": "cn-north-4", '
        '"target_region": "cn-east-3"}',
    )
    assert only_problem(manifest).column == "image_id"


def test_json_number_image_id_is_a_problem(tmp_path: Path) -> None:
    """Ids are strings in JSON Lines."""
    manifest = load_jsonl(
        tmp_path, {"image_id": 5, "source_region": "cn-north-4", "target_region": "cn-east-3"}
    )
    problem = only_problem(manifest)
    assert (problem.line, problem.column, problem.message) == (
        1,
        "image_id",
        "must be a string, not a number",
    )


def test_json_missing_required_key_is_a_problem(tmp_path: Path) -> None:
    """An object without target_region is named at its line."""
    manifest = load_jsonl(tmp_path, {"image_id": "i", "source_region": "cn-north-4"})
    assert only_problem(manifest).column == "target_region"


def test_json_unknown_key_is_one_warning(tmp_path: Path) -> None:
    """An unknown key warns once, at its first line, and is ignored."""
    obj = {"image_id": "i", "source_region": "cn-north-4", "target_region": "cn-east-3", "size": 1}
    manifest = load_jsonl(tmp_path, obj, {**obj, "image_id": "j"})
    assert [(w.line, w.column) for w in manifest.warnings] == [(1, "size")]
    assert len(manifest.rows) == 2


# --- warnings --------------------------------------------------------------------------------


def test_unknown_csv_column_is_a_warning_with_suggestion(tmp_path: Path) -> None:
    """A misspelt optional column warns (with a suggestion) and the rows still load."""
    manifest = load_csv(tmp_path, f"{HEADER},agency", "i,cn-north-4,cn-east-3,x")
    assert manifest.problems == []
    assert len(manifest.rows) == 1
    warning = manifest.warnings[0]
    assert (warning.line, warning.column) == (1, "agency")
    assert "did you mean agency_name?" in warning.message


def test_unnamed_column_is_a_warning(tmp_path: Path) -> None:
    """A trailing comma in the header gives an unnamed column, ignored with a warning."""
    manifest = load_csv(tmp_path, f"{HEADER},", "i,cn-north-4,cn-east-3,")
    assert manifest.warnings[0].message == "column 4 has no name; its values are ignored"


# --- whole-file errors -----------------------------------------------------------------------


def test_unknown_suffix_is_an_error(tmp_path: Path) -> None:
    """Only .csv and .jsonl are lists."""
    path = tmp_path / "list.xlsx"
    path.write_text("x")
    assert "unknown list format ('.xlsx'); name the file .csv" in whole_file_error(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A list that does not exist is named."""
    message = whole_file_error(tmp_path / "gone.csv")
    assert message.startswith(f"{tmp_path / 'gone.csv'}: cannot read the list: ")


def test_directory_is_an_error(tmp_path: Path) -> None:
    """A folder named like a list is unreadable, not a crash."""
    (tmp_path / "dir.csv").mkdir()
    assert "cannot read the list" in whole_file_error(tmp_path / "dir.csv")


def test_not_utf8_names_line_and_offset(tmp_path: Path) -> None:
    """A Latin-1 byte is located by line and byte offset."""
    path = tmp_path / "list.csv"
    good = f"{HEADER},name\ni,cn-north-4,cn-east-3,caf".encode()
    path.write_bytes(good + b"\xe9\n")
    message = whole_file_error(path)
    assert message.endswith(
        f"not UTF-8: line 2 has the byte 0xe9 at offset {len(good)} of the file "
        "(save the list as UTF-8)"
    )


@pytest.mark.parametrize("content", [b"", b"\n \n", b"\xef\xbb\xbf"])
def test_empty_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    """A list with nothing in it is an error, not a successful run of nothing."""
    path = tmp_path / "list.csv"
    path.write_bytes(content)
    assert "the list is empty" in whole_file_error(path)


def test_empty_jsonl_is_an_error(tmp_path: Path) -> None:
    """An empty JSON Lines list is an error too."""
    path = tmp_path / "list.jsonl"
    path.write_text("\n\n")
    assert "the list is empty" in whole_file_error(path)


def test_header_only_is_an_error(tmp_path: Path) -> None:
    """A header without rows is an error."""
    path = tmp_path / "list.csv"
    path.write_text(f"{HEADER}\n\n")
    assert "has a header (line 1) but no rows" in whole_file_error(path)


def test_missing_required_column_is_an_error(tmp_path: Path) -> None:
    """A header without target_region is an error naming it."""
    path = tmp_path / "list.csv"
    path.write_text("image_id,source_region\ni,cn-north-4\n")
    assert "the header lacks the required column target_region" in whole_file_error(path)


def test_list_without_header_is_an_error(tmp_path: Path) -> None:
    """A first line of data is not taken as a header."""
    path = tmp_path / "list.csv"
    path.write_text("i,cn-north-4,cn-east-3\n")
    message = whole_file_error(path)
    assert "lacks the required columns image_id, source_region, target_region" in message


def test_duplicate_header_column_is_an_error(tmp_path: Path) -> None:
    """Two columns with one name are ambiguous."""
    path = tmp_path / "list.csv"
    path.write_text(f"{HEADER},name,name\ni,cn-north-4,cn-east-3,a,b\n")
    assert "column name appears twice" in whole_file_error(path)


def test_unclosed_quote_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """A quote never closed names the line where it opened."""
    path = tmp_path / "list.csv"
    path.write_text(f'{HEADER},name\ni,cn-north-4,cn-east-3,ok\nj,cn-north-4,cn-east-3,"open\nk\n')
    message = whole_file_error(path)
    assert ":3: not valid CSV:" in message
    assert "starts on line 3 is never closed" in message
