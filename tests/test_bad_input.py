"""Bad input, named and never guessed: the catalogue of broken lists, configs and state dirs.

Each case goes through the CLI's ``main()`` (in process, as a user's shell would call it) on
virtual time against the in-memory cloud over one simulated world per test module, and asserts
the exact words the user sees, what was submitted (the simulator's ground truth), and that an
unusable list or config exits 2 before any request at all.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.core.model import item_key, item_token
from orchestrator.simulator.harness import Cloud
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World
from tests.inprocess import LocalCloud

HEADER = "tenant,image_id,source_region,target_region"
NORTH, EAST = "cn-north-4", "cn-east-3"
COLUMNS = (
    "image_id, source_region, target_region, name, description, project_name, "
    "source_project_name, agency_name, tenant, vault_id, priority, tags"
)


@dataclass
class Simulator:
    """One simulator for the tests of a worker, with a pool of unused source images."""

    cloud: LocalCloud
    free: list[str]

    def image(self) -> str:
        return self.free.pop()

    @property
    def world(self) -> World:
        assert self.cloud.world is not None
        return self.cloud.world

    def truth(self) -> Truth:
        return self.cloud.truth()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    cloud = LocalCloud(tmp_path_factory.mktemp("simulator"))
    cloud.account("t0")
    images = [cloud.image("t0", 1) for _ in range(40)]
    cloud.start()
    try:
        yield Simulator(cloud, images)
    finally:
        cloud.stop()


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    requests: int  # requests the simulator received during the run
    submitted: dict[str, int] = field(default_factory=dict)  # item key -> copies made

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


@dataclass
class Case:
    """A folder with a list and a config pointing at the shared simulator."""

    sim: Simulator
    root: Path
    files: Cloud

    @property
    def csv(self) -> Path:
        return self.root / "migration.csv"

    @property
    def state_dir(self) -> Path:
        return self.root / "migration.state"

    def row(self, image_id: str, target: str = EAST, source: str = NORTH) -> str:
        return f"t0,{image_id},{source},{target}"

    def key(self, image_id: str, target: str = EAST) -> str:
        return item_key("t0", image_id, target)

    def run(
        self, path: Path | None = None, *extra: str, env: Mapping[str, str] | None = None
    ) -> Outcome:
        before = self.sim.truth()
        out, err = io.StringIO(), io.StringIO()
        argv = ["run", str(path or self.csv), "--config", str(self.files.config_path)]
        code = main(
            [*argv, "--progress", "none", *extra],
            environ=self.files.env() if env is None else env,
            stdout=out,
            stderr=err,
            clouds=in_memory_clouds(self.sim.world),
            clock=self.sim.cloud.clock,
        )
        after = self.sim.truth()
        submitted = {
            key: n - before.submissions.get(key, 0)
            for key, n in after.submissions.items()
            if n != before.submissions.get(key, 0)
        }
        requests = sum(after.requests.values()) - sum(before.requests.values())
        return Outcome(code, out.getvalue(), err.getvalue(), requests, submitted)


@pytest.fixture
def case(simulator: Simulator, tmp_path: Path) -> Case:
    files = Cloud(tmp_path, accounts=simulator.cloud.accounts, port=simulator.cloud.port)
    files.write_config()
    return Case(simulator, tmp_path, files)


def assert_unusable(case: Case, done: Outcome, message: str) -> None:
    """Exit 2 with this message, before any request, and no state written."""
    assert done.code == 2, done.stderr
    assert f"ims-migrate: {message}" in done.lines, done.stderr
    assert done.requests == 0
    assert not (case.state_dir / "checkpoint.json").exists()


# -- lists that cannot be used at all: exit 2, no request -------------------------------------


def test_empty_file(case: Case) -> None:
    """An empty list: exit 2 before any request, the file named."""
    case.csv.write_text("")
    done = case.run()
    assert_unusable(case, done, f"{case.csv}: the list is empty (expected a header row and rows)")


def test_header_only(case: Case) -> None:
    """A header and no rows: exit 2 before any request, the header's line named."""
    case.csv.write_text(HEADER + "\n")
    done = case.run()
    message = f"{case.csv}: the list has a header (line 1) but no rows to migrate"
    assert_unusable(case, done, message)


def test_missing_required_column(case: Case) -> None:
    """A header without source_region: exit 2 before any request, file:line and the column."""
    case.csv.write_text(f"tenant,image_id,target_region\nt0,{case.sim.image()},{EAST}\n")
    done = case.run()
    message = (
        f"{case.csv}:1: the header lacks the required column source_region (the first line "
        "must name the columns, e.g. image_id,source_region,target_region,name)"
    )
    assert_unusable(case, done, message)


def test_non_utf8_bytes(case: Case) -> None:
    """A Latin-1 byte in the list: exit 2 before any request, the line and the byte named."""
    before = f"{HEADER},name\n{case.row(case.sim.image())},caf".encode()
    case.csv.write_bytes(before + b"\xe9\n")
    done = case.run()
    message = (
        f"{case.csv}: not UTF-8: line 2 has the byte 0xe9 at offset {len(before)} of the file "
        "(save the list as UTF-8)"
    )
    assert_unusable(case, done, message)


# -- configs and state dirs that cannot be used: exit 2, no request ---------------------------


def test_toml_syntax_error(case: Case) -> None:
    """A config with a broken table header: exit 2 before any request, file:line:column."""
    case.csv.write_text(f"{HEADER}\n{case.row(case.sim.image())}\n")
    text = case.files.config_path.read_text().replace("[timing]", "[timing")
    case.files.config_path.write_text(text)
    line = text.splitlines().index("[timing") + 1
    done = case.run()
    message = (
        f"{case.files.config_path}:{line}:8: not valid TOML: Expected ']' at the end of a table "
        "declaration (fix the syntax there)"
    )
    assert_unusable(case, done, message)


def test_tenant_without_credentials(case: Case) -> None:
    """The tenant's key variables are unset: exit 2 before any request, the variables named."""
    case.csv.write_text(f"{HEADER}\n{case.row(case.sim.image())}\n")
    env = {k: v for k, v in case.files.env().items() if not k.startswith("E2E_T0_")}
    done = case.run(env=env)
    assert done.code == 2, done.stderr
    assert (
        'ims-migrate: tenant "t0": E2E_T0_AK and E2E_T0_SK are not set (export the access key '
        "in E2E_T0_AK and the secret key in E2E_T0_SK; a temporary key also needs its token in "
        "HUAWEICLOUD_SDK_SECURITY_TOKEN)"
    ) in done.lines, done.stderr
    assert done.requests == 0


def test_state_dir_of_another_list(case: Case) -> None:
    """A state dir that belongs to another list: exit 2 before any request, both lists named;
    the other list's checkpoint is left as it was."""
    case.csv.write_text(f"{HEADER}\n{case.row(case.sim.image())}\n")
    assert case.run().code == 0
    snapshot = (case.state_dir / "checkpoint.json").read_bytes()
    other = case.root / "other.csv"
    other.write_text(f"{HEADER}\n{case.row(case.sim.image())}\n")
    done = case.run(other, "--state-dir", str(case.state_dir))
    assert done.code == 2, done.stderr
    assert (
        f"ims-migrate: {case.state_dir}: this state dir belongs to the list {case.csv.resolve()}"
        f", not {other.resolve()}; give this list its own --state-dir"
    ) in done.lines, done.stderr
    assert done.requests == 0
    assert (case.state_dir / "checkpoint.json").read_bytes() == snapshot


# -- bad rows: named at file:line, never submitted; the good rows go on ------------------------


def run_with_bad_row(case: Case, bad_row: str, *, line: int = 3) -> tuple[Outcome, str]:
    """A list with one good row (line 2) and ``bad_row`` at ``line``: exit 1, only the good
    row is copied, once. Returns the outcome and the good row's image."""
    good = case.sim.image()
    rows = [case.row(good)] + [""] * (line - 3) + [bad_row]
    case.csv.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    done = case.run()
    assert done.code == 1, done.stderr
    assert done.submitted == {case.key(good): 1}, done.submitted
    return done, good


def test_duplicate_item_key(case: Case) -> None:
    """The same (tenant, image, target) twice: the later line is named with the first line's
    number, and the image is copied once."""
    image = case.sim.image()
    case.csv.write_text(f"{HEADER}\n{case.row(image)}\n{case.row(image)}\n")
    done = case.run()
    assert done.code == 1, done.stderr
    assert (
        f"{case.csv}:3: image_id: duplicate of line 2 (same tenant t0, image {image} and "
        f"target_region {EAST}); an image is copied once per tenant and target region, so "
        "remove one of the two rows"
    ) in done.lines, done.stderr
    assert done.submitted == {case.key(image): 1}


def test_unknown_region(case: Case) -> None:
    """A mistyped region id: named with a suggestion, never submitted."""
    done, _ = run_with_bad_row(case, case.row(case.sim.image(), target="cn-nort-4"))
    assert (
        f'{case.csv}:3: target_region: unknown region "cn-nort-4" (did you mean cn-north-4? a '
        "private region can be added with [regions] extra = [...] in the config)"
    ) in done.lines, done.stderr


def test_same_source_and_target(case: Case) -> None:
    """Source and target the same region: named, never submitted."""
    done, _ = run_with_bad_row(case, case.row(case.sim.image(), target=NORTH))
    assert (
        f"{case.csv}:3: target_region: same as source_region ({NORTH}); a cross-region copy "
        "needs another region"
    ) in done.lines, done.stderr


FORBIDDEN = "IMS does not accept <, > or line breaks in a description"


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("web <prod>", f"contains < and >; {FORBIDDEN}"),
        ('"two\nlines"', f"contains a line break; {FORBIDDEN}"),
    ],
    ids=["angle-brackets", "line-break"],
)
def test_description_with_forbidden_characters(case: Case, description: str, problem: str) -> None:
    """A description with <, > or a line break: named, never submitted."""
    good, bad = case.sim.image(), case.sim.image()
    header = HEADER + ",description"
    case.csv.write_text(f"{header}\n{case.row(good)},\n{case.row(bad)},{description}\n")
    done = case.run()
    assert done.code == 1, done.stderr
    assert f"{case.csv}:3: description: {problem}" in done.lines, done.stderr
    assert done.submitted == {case.key(good): 1}


def test_description_too_long_with_the_token(case: Case) -> None:
    """A 1025-character description: named with the room the token leaves, never submitted."""
    good, bad = case.sim.image(), case.sim.image()
    suffix = f" [{item_token(case.key(bad))}]"
    case.csv.write_text(f"{HEADER},description\n{case.row(good)},\n{case.row(bad)},{'d' * 1025}\n")
    done = case.run()
    assert done.code == 1, done.stderr
    assert (
        f"{case.csv}:3: description: is 1025 characters long; at most {1024 - len(suffix)} are "
        f'allowed, because ims-migrate appends "{suffix}" ({len(suffix)} characters) to find the '
        "copy again and IMS accepts 1024 in all"
    ) in done.lines, done.stderr
    assert done.submitted == {case.key(good): 1}


def test_name_of_129_characters(case: Case) -> None:
    """A 129-character name is named as too long and never submitted; 128 is copied."""
    fits, too_long = case.sim.image(), case.sim.image()
    case.csv.write_text(
        f"{HEADER},name\n{case.row(fits)},{'n' * 128}\n{case.row(too_long)},{'n' * 129}\n"
    )
    done = case.run()
    assert done.code == 1, done.stderr
    shown = json.dumps("n" * 39 + "…", ensure_ascii=False)
    assert (
        f"{case.csv}:3: name: {shown} is 129 characters long; IMS allows at most 128"
    ) in done.lines, done.stderr
    assert done.submitted == {case.key(fits): 1}


def test_json_lines_with_a_broken_line(case: Case) -> None:
    """A .jsonl line that is not JSON: a damaged file, exit 2 naming file:line, nothing run."""
    good, later = case.sim.image(), case.sim.image()
    path = case.root / "migration.jsonl"

    def obj(image_id: str) -> str:
        return json.dumps(
            {"tenant": "t0", "image_id": image_id, "source_region": NORTH, "target_region": EAST}
        )

    broken = '{"tenant": "t0", "image_id": }'
    path.write_text(f"{obj(good)}\n{broken}\n{obj(later)}\n")
    done = case.run(path)
    column = broken.index("}") + 1
    message = (
        f"{path}:2: not valid JSON: Expecting value (column {column}); each line must be one "
        "JSON object; nothing was run"
    )
    assert_unusable(case, done, message)


def test_csv_row_with_more_values_than_the_header(case: Case) -> None:
    """A .csv row with an extra value: a damaged file, exit 2 naming file:line, nothing run."""
    good = case.sim.image()
    case.csv.write_text(f"{HEADER}\n{case.row(good)}\n{case.row(case.sim.image())},extra\n")
    done = case.run()
    message = (
        f"{case.csv}:3: not valid CSV for this header: the row has 5 values but the header has "
        "4 columns (quote a value that contains a comma; nothing was run)"
    )
    assert_unusable(case, done, message)


# -- accepted quirks: warned or silently fine ------------------------------------------------


def test_unknown_column_is_warned_and_ignored(case: Case) -> None:
    """An unknown column is warned about (with a suggestion) and ignored; the row is copied."""
    image = case.sim.image()
    case.csv.write_text(f"{HEADER},nmae\n{case.row(image)},web\n")
    done = case.run()
    assert done.code == 0, done.stderr
    assert (
        f"warning: {case.csv}:1: nmae: unknown column, ignored (did you mean name? known "
        f"columns: {COLUMNS})"
    ) in done.lines, done.stderr
    assert done.submitted == {case.key(image): 1}


@pytest.mark.parametrize(
    ("bom", "newline"), [(b"\xef\xbb\xbf", "\n"), (b"", "\r\n")], ids=["bom", "crlf"]
)
def test_bom_and_crlf_are_read_as_plain_csv(case: Case, bom: bytes, newline: str) -> None:
    """A UTF-8 BOM, or CRLF line ends, are accepted silently; a bad row is still named by its
    line, and only the good row is copied."""
    good, bad = case.sim.image(), case.sim.image()
    rows = [HEADER, case.row(good), case.row(bad, target=NORTH)]
    case.csv.write_bytes(bom + newline.join(rows).encode() + newline.encode())
    done = case.run()
    assert done.code == 1, done.stderr
    assert [line for line in done.lines if line.startswith(str(case.csv))] == [
        f"{case.csv}:3: target_region: same as source_region ({NORTH}); a cross-region copy "
        "needs another region"
    ]
    assert not any(line.startswith("warning:") for line in done.lines), done.stderr
    assert done.submitted == {case.key(good): 1}
