"""``ims-migrate discover``: filters, eligibility as ``plan`` judges it, --append, a refused
tenant, the request count of a large region; on the in-memory cloud over the simulator's world."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from orchestrator.commands.common import UsageError
from orchestrator.commands.discover import DiscoverRequest, DiscoverResult, discover
from orchestrator.commands.plan import PlanRequest, Verdict, make_plan
from orchestrator.commands.run import RunRequest, execute_run
from orchestrator.config import Config, TenantConfig
from orchestrator.core.discovery import Filters, parse_time
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import item_key, item_token
from orchestrator.core.units import GIB
from orchestrator.output.discover_output import closing_lines, discover_table
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.world import World
from tests.virtual_clock import VirtualClock

SOURCE, TARGET, OTHER = "cn-north-4", "cn-east-3", "cn-south-1"
NOW = 1_800_000_000.0
TENANTS = ("t0", "t1")
CONFIG = Config(
    agency_name="ims_admin_agency",
    tenants={t: TenantConfig(t, access_key_env=f"{t}_AK", secret_key_env=f"{t}_SK")
             for t in TENANTS},
)  # fmt: skip


class Fleet:
    """A world with two accounts, and discovery of it into a list under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = World(WorldParams())
        for tenant in TENANTS:
            self.world.add_account(tenant, f"dom-{tenant}", f"AK-{tenant}", f"SK-{tenant}")
        self.clock = VirtualClock(NOW)
        self.seq = 0
        self.environ = {f"{t}_AK": f"AK-{t}" for t in TENANTS} | {
            f"{t}_SK": f"SK-{t}" for t in TENANTS
        }

    def image(self, tenant: str = "t0", region: str = SOURCE, gib: float = 5, **attrs: Any) -> str:
        self.seq += 1
        created = f"2026-01-{1 + self.seq % 28:02d}T08:00:{self.seq % 60:02d}Z"
        image = self.world.add_image(
            tenant, region, {"name": f"img-{self.seq:03d}", "__image_size": str(int(gib * GIB)),
                             "created_at": created, **attrs},
        )  # fmt: skip
        return str(image["id"])

    @property
    def list_path(self) -> Path:
        return self.root / "fleet.csv"

    async def discover(self, **request: Any) -> DiscoverResult:
        fields: dict[str, Any] = {
            "config": CONFIG,
            "environ": self.environ,
            "source_regions": (SOURCE,),
            "target_regions": (TARGET,),
            "list_path": self.list_path,
            "append": True,
        }
        fields.update(request)
        return await discover(
            DiscoverRequest(**fields), clouds=in_memory_clouds(self.world), clock=self.clock
        )

    def rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.list_path.read_text())))

    def listed_ids(self) -> set[str]:
        return {row["image_id"] for row in self.rows()}


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


# -- filters -------------------------------------------------------------------------------


FILTER_CASES: list[tuple[str, Filters, dict[str, Any], dict[str, Any]]] = [
    ("name glob", Filters(names=("web-*",)), {"name": "web-01"}, {"name": "db-01"}),
    ("exact name", Filters(names=("web-01",)), {"name": "web-01"}, {"name": "web-011"}),
    ("exclude name", Filters(exclude_names=("*-tmp",)), {"name": "a"}, {"name": "a-tmp"}),
    ("tags, all of them", Filters(tags=(("env", "prod"), ("team", "x"))),
     {"tags": ["env.prod", "team.x"]}, {"tags": ["env.prod"]}),
    ("enterprise project", Filters(enterprise_project="ep-1"),
     {"enterprise_project_id": "ep-1"}, {"enterprise_project_id": "ep-2"}),
    ("default enterprise project", Filters(enterprise_project="0"), {},
     {"enterprise_project_id": "ep-2"}),
    ("created after (inclusive)", Filters(created_after=parse_time("2026-03-01T00:00:00Z")),
     {"created_at": "2026-03-01T00:00:00Z"}, {"created_at": "2026-02-28T23:59:59Z"}),
    ("created before (exclusive)", Filters(created_before=parse_time("2026-03-01")),
     {"created_at": "2026-02-28T23:59:59Z"}, {"created_at": "2026-03-01T00:00:00Z"}),
    ("OS type", Filters(os_type="Windows"), {"__os_type": "Windows"}, {"__os_type": "Linux"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kept", "dropped", "filters"),
    [(case[2], case[3], case[1]) for case in FILTER_CASES],
    ids=[case[0] for case in FILTER_CASES],
)
async def test_each_filter_keeps_the_matching_image_only(
    fleet: Fleet, filters: Filters, kept: dict[str, Any], dropped: dict[str, Any]
) -> None:
    """The image that matches is listed, the other is counted as not matching."""
    good = fleet.image(**kept)
    fleet.image(**dropped)
    result = await fleet.discover(filters=filters)
    assert fleet.listed_ids() == {good}
    assert result.tallies[0].listed == 1


def test_only_documented_filters_go_to_the_server() -> None:
    """Globs, a second tag and a second time bound stay local; the rest is sent as documented."""
    filters = Filters(
        names=("web-*",),
        tags=(("env", "prod"), ("team", "x")),
        enterprise_project="ep-1",
        created_after=parse_time("2026-03-01T10:00:00.5Z"),
        created_before=parse_time("2026-04-01"),
        os_type="Linux",
    )
    assert filters.server_query() == {
        "tag": "env.prod",
        "enterprise_project_id": "ep-1",
        "__os_type": "Linux",
        "created_at": "gte:2026-03-01T10:00:00Z",
    }


# -- eligibility -----------------------------------------------------------------------------

BAD_IMAGES: dict[str, dict[str, Any]] = {
    "encrypted": {"__system__cmkid": "kms-key-1"},
    "iso": {"disk_format": "iso", "virtual_env_type": "IsoImage"},
    "too_large": {"__image_size": str(400 * GIB), "min_disk": 400},
    "not_active": {"status": "queued"},
    "whole_image_needs_vault": {"__whole_image": "true"},
}


async def test_each_reason_is_left_out_with_the_verdict_plan_gives(fleet: Fleet) -> None:
    """Encrypted, ISO, too large, not active, full-ECS: left out by reason; plan, given every
    image (--include-ineligible), rejects exactly these with the same codes and copies the rest."""
    ids = {reason: fleet.image(**attrs) for reason, attrs in BAD_IMAGES.items()}
    good = fleet.image()
    windows = fleet.image(__os_type="Windows")
    result = await fleet.discover(skipped_path=fleet.root / "skipped.csv")
    assert fleet.listed_ids() == {good, windows}
    assert dict(result.tallies[0].left_out) == dict.fromkeys(BAD_IMAGES, 1)
    assert result.tallies[0].flagged == {"windows": 1}
    skipped = list(csv.DictReader(io.StringIO((fleet.root / "skipped.csv").read_text())))
    assert {row["image_id"]: row["reason"] for row in skipped} == {v: k for k, v in ids.items()}

    everything = fleet.root / "all.csv"
    await fleet.discover(list_path=everything, append=False, include_ineligible=True)
    plan = await make_plan(
        PlanRequest(everything, CONFIG, fleet.environ),
        clouds=in_memory_clouds(fleet.world),
        clock=fleet.clock,
    )
    planned = {row.image_id: (row.verdict, row.code) for row in plan.rows}
    assert planned == {
        **{image_id: (Verdict.REJECTED, reason) for reason, image_id in ids.items()},
        good: (Verdict.COPY, ""),
        windows: (Verdict.COPY, ""),
    }
    assert any("windows" in note for row in plan.rows for note in row.notes)


async def test_copies_made_by_the_tool_are_never_sources(fleet: Fleet) -> None:
    """An image whose description carries a token is left out, even with --include-ineligible."""
    token = item_token(item_key("t0", "some-image", SOURCE))
    fleet.image(__description=f"copy [{token}]")
    result = await fleet.discover(include_ineligible=True)
    assert fleet.rows() == []
    assert result.tallies[0].left_out == {"made_by_ims_migrate": 1}


# -- the list file -----------------------------------------------------------------------------


async def test_rows_are_sorted_and_two_runs_write_the_same_bytes(fleet: Fleet) -> None:
    """By tenant, source region, creation time, id; one row per target; the same bytes twice."""
    for n in range(6):
        fleet.image(TENANTS[n % 2], created_at=f"2026-0{6 - n}-01T00:00:00Z")
    first, second = fleet.root / "a.csv", fleet.root / "b.csv"
    await fleet.discover(list_path=first, append=False, target_regions=(TARGET, OTHER))
    await fleet.discover(list_path=second, append=False, target_regions=(TARGET, OTHER))
    assert first.read_bytes() == second.read_bytes()
    rows = list(csv.DictReader(io.StringIO(first.read_text())))
    assert len(rows) == 12
    assert list(rows[0]) == [
        "image_id", "source_region", "target_region", "tenant", "name", "description", "vault_id",
    ]  # fmt: skip
    created = {
        image_id: image["created_at"] for image_id, image in fleet.world.images[SOURCE].items()
    }
    keys = [(r["tenant"], r["source_region"], created[r["image_id"]], r["image_id"]) for r in rows]
    assert keys == sorted(keys)


async def test_output_refuses_an_existing_file(fleet: Fleet) -> None:
    """--output on a file that exists: a usage error (exit 2), the file untouched."""
    fleet.image()
    fleet.list_path.write_text("mine\n")
    with pytest.raises(UsageError, match="exists"):
        await fleet.discover(append=False)
    assert fleet.list_path.read_text() == "mine\n"


async def test_append_twice_on_an_unchanged_fleet_writes_nothing_the_second_time(
    fleet: Fleet,
) -> None:
    """The second --append finds every key in the list and leaves the file alone."""
    for _ in range(3):
        fleet.image()
    first = await fleet.discover()
    assert first.wrote
    assert len(first.added) == 3
    stat = fleet.list_path.stat()
    second = await fleet.discover()
    assert not second.wrote
    assert second.added == []
    assert second.tallies[0].already == 3
    assert fleet.list_path.stat().st_mtime_ns == stat.st_mtime_ns
    assert fleet.list_path.stat().st_ino == stat.st_ino


async def run_list(fleet: Fleet) -> int:
    async with anyio.create_task_group() as group:
        group.start_soon(fleet.clock.autojump)
        summary = await execute_run(
            RunRequest(fleet.list_path, CONFIG, fleet.environ),
            clouds=in_memory_clouds(fleet.world),
            clock=fleet.clock,
            handle_signals=False,
        )
        group.cancel_scope.cancel()
    return int(summary.exit_code)


async def test_append_after_new_images_adds_exactly_those_and_run_copies_only_them(
    fleet: Fleet,
) -> None:
    """Old bytes stay a prefix of the file; the next run submits the new images only."""
    old = {fleet.image() for _ in range(3)}
    await fleet.discover()
    assert await run_list(fleet) == ExitCode.OK
    before = fleet.list_path.read_bytes()
    copies = set(fleet.world.submissions)
    new = {fleet.image(), fleet.image(tenant="t1")}
    result = await fleet.discover()
    assert {row.image_id for row in result.added} == new
    assert fleet.list_path.read_bytes().startswith(before)
    assert fleet.listed_ids() == old | new
    assert await run_list(fleet) == ExitCode.OK
    made = {key.split("/")[1] for key in set(fleet.world.submissions) - copies}
    assert made == new
    assert max(fleet.world.submissions.values()) == 1


async def test_a_jsonl_list_gets_json_lines(fleet: Fleet) -> None:
    """A .jsonl list: one object per row with the key columns; --format must fit the suffix."""
    image_id = fleet.image()
    path = fleet.root / "fleet.jsonl"
    with pytest.raises(UsageError, match="does not fit"):
        await fleet.discover(list_path=path, fmt="csv")
    await fleet.discover(list_path=path, fmt="jsonl")
    assert path.read_text() == (
        f'{{"image_id": "{image_id}", "source_region": "{SOURCE}", '
        f'"target_region": "{TARGET}", "tenant": "t0"}}\n'
    )


async def test_append_keeps_a_hand_made_list_and_its_columns(fleet: Fleet) -> None:
    """A list in another column order with a bad row: its bytes stay, new rows follow its header."""
    image_id = fleet.image()
    text = "tenant,target_region,image_id,source_region,priority\r\nt0,cn-east-3,x,nowhere,9"
    fleet.list_path.write_text(text, newline="")
    await fleet.discover()
    data = fleet.list_path.read_bytes()
    assert data == (text + f"\r\nt0,{TARGET},{image_id},{SOURCE},\r\n").encode()


async def test_a_refused_tenant_exits_1_and_the_others_are_written(fleet: Fleet) -> None:
    """t1's secret key is wrong: named, one probe is all it costs; t0's rows are written."""
    good = fleet.image("t0")
    fleet.image("t1")
    fleet.environ["t1_SK"] = "wrong"
    result = await fleet.discover()
    assert result.exit_code == ExitCode.ATTENTION
    assert [(t.tenant, bool(t.error)) for t in result.tallies] == [("t0", False), ("t1", True)]
    assert fleet.listed_ids() == {good}
    assert fleet.world.auth_failures["AK-t1"] <= 1


async def test_ten_thousand_images_cost_tens_of_requests(fleet: Fleet) -> None:
    """A region of 10,000 private images: 21 pages of 500 and one probe, nothing else."""
    for n in range(10_000):
        fleet.world.add_image("t0", SOURCE, {"name": f"bulk-{n:05d}"})
    result = await fleet.discover(tenants=("t0",))
    assert len(result.added) == 10_000
    requests = fleet.world.truth(NOW).requests
    assert requests == {"iam": 1, "list": 21}


async def test_discovery_makes_no_mutating_call_and_no_state_dir(fleet: Fleet) -> None:
    """Read-only: only GETs in the world's log, no folder but the list beside it."""
    fleet.image()
    await fleet.discover()
    assert {record.method for record in fleet.world.request_log} == {"GET"}
    assert sorted(p.name for p in fleet.root.iterdir()) == ["fleet.csv"]


async def test_no_agency_in_the_config_is_a_usage_error(fleet: Fleet) -> None:
    """run would reject every row: say so before any call."""
    with pytest.raises(UsageError, match="agency_name"):
        await fleet.discover(config=replace(CONFIG, agency_name=None))
    assert fleet.world.request_log == []


async def test_credentials_a_run_saw_refused_are_not_tried_again(fleet: Fleet) -> None:
    """Cron's discover then run: t1's key goes bad, the run remembers it refused, and the next
    discover of that list does not try it again (5 bad signatures in a row lock a key)."""
    fleet.image("t0")
    fleet.image("t1")
    await fleet.discover()
    fleet.environ["t1_SK"] = "wrong"
    assert await run_list(fleet) == ExitCode.ATTENTION
    tried = fleet.world.auth_failures["AK-t1"]
    result = await fleet.discover()
    assert result.exit_code == ExitCode.ATTENTION
    assert "earlier run" in result.tallies[1].error
    assert fleet.world.auth_failures["AK-t1"] == tried


async def test_the_summary_names_the_unit_of_each_count(fleet: Fleet) -> None:
    """Images and rows differ (an image gives one row per target region): each column of the
    summary and its closing lines say which they count, and the rows add up."""
    fleet.image()
    fleet.image()
    fleet.image(**BAD_IMAGES["encrypted"])
    fleet.image(name="other-name")
    result = await fleet.discover(target_regions=(TARGET, OTHER), filters=Filters(names=("img-*",)))
    table = discover_table(result)
    assert [str(column.header).replace("\n", " ") for column in table.columns][2:] == [
        "images found", "images not matching", "rows listed", "rows already in list",
        "rows left out", "rows left out, by reason", "rows listed, flagged",
    ]  # fmt: skip
    console = Console(record=True, width=160)
    console.print(table)
    assert "rows: one per image and target region (2 target regions)" in console.export_text()
    lines = closing_lines(result, appended=False)
    assert lines[0] == (
        "4 images found, 1 not matching the filters; 3 images x 2 target regions = 6 rows: "
        "4 listed, 0 already in the list, 2 left out"
    )
    assert lines[1].startswith("4 rows (one per image and target region) written to ")
