"""``ims-migrate plan``: a verdict per row, the estimate, the quotas, and not one mutating call."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.commands.plan import Plan, PlanRequest, PlanRow, Verdict, make_plan
from orchestrator.config import (
    DEFAULT_AK_ENV,
    DEFAULT_SK_ENV,
    Config,
    TenantConfig,
)
from orchestrator.core.credentials import Credentials, credential_fingerprint
from orchestrator.core.estimate import (
    ASSUMED_FIXED_SECONDS,
    ASSUMED_SECONDS_PER_GIB,
    makespan,
    speed_from_samples,
)
from orchestrator.core.model import Item, Phase, Row, item_key, item_token
from orchestrator.core.units import GIB
from orchestrator.output.plan_output import plan_renderables, render_plan_csv, render_plan_json
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World
from orchestrator.state.checkpoint import CheckpointStore, acquire_lock, release_lock
from orchestrator.state.meta import BlockedKey, RunMeta
from tests.inprocess import Completed, LocalCloud
from tests.virtual_clock import VirtualClock

SOURCE, TARGET = "cn-north-4", "cn-east-3"
NOW = 1_800_000_000.0
ACCESS_KEY, SECRET_KEY = "AKT0", "SKT0"
CONFIG = Config(agency_name="ims_admin_agency", tenants={"t0": TenantConfig("t0")})


class Setup:
    """A world with one account, a list file, and the plan of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = World(WorldParams())
        self.world.add_account("t0", "dom-t0", ACCESS_KEY, SECRET_KEY)
        self.rows: list[dict[str, str]] = []

    def image(self, gib: float, **attrs: Any) -> str:
        image = self.world.add_image(
            "t0", SOURCE, {"name": f"img-{len(self.rows)}", "__image_size": str(int(gib * GIB)),
                           **attrs},
        )  # fmt: skip
        return str(image["id"])

    def row(self, gib: float, target: str = TARGET, **attrs: Any) -> str:
        image_id = self.image(gib, **attrs)
        self.rows.append(
            {"tenant": "t0", "image_id": image_id, "source_region": SOURCE, "target_region": target}
        )
        return image_id

    @property
    def list_path(self) -> Path:
        return self.root / "migration.csv"

    def write(self, extra_lines: Sequence[str] = ()) -> None:
        with self.list_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
            for line in extra_lines:
                handle.write(line + "\n")

    async def plan(self, secret_key: str = SECRET_KEY, **request: Any) -> Plan:
        """The plan of the list against the world, with ``secret_key`` in the environment."""
        environ = {DEFAULT_AK_ENV: ACCESS_KEY, DEFAULT_SK_ENV: secret_key}
        return await make_plan(
            PlanRequest(self.list_path, CONFIG, environ, **request),
            clouds=in_memory_clouds(self.world),
            clock=VirtualClock(NOW),
        )

    def truth(self) -> Truth:
        return self.world.truth(NOW)


def verdicts(plan: Plan) -> dict[int, Verdict]:
    return {row.line: row.verdict for row in plan.rows}


async def save_checkpoint(
    state_dir: Path, items: Sequence[Item], meta: RunMeta | None = None
) -> None:
    fd = acquire_lock(state_dir)  # creates the folder
    try:
        store = CheckpointStore(state_dir)
        store.open()
        await store.commit(items, meta=meta)
        store.compact_now()
        store.close()
    finally:
        release_lock(fd)


def row_of(setup: Setup, index: int) -> Row:
    raw = setup.rows[index]
    return Row(line=index + 2, tenant="t0", image_id=raw["image_id"], source_region=SOURCE,
               target_region=raw["target_region"])  # fmt: skip


# -- verdicts ------------------------------------------------------------------------------------


async def test_each_row_gets_copy_present_or_rejected_with_the_reason(tmp_path: Path) -> None:
    """Copy, already present (by token), rejected by a rule and a bad row: each named, no POST."""
    setup = Setup(tmp_path)
    setup.row(5)
    present = setup.row(3)
    setup.row(2, __system__cmkid="kms-key-1")
    setup.world.add_image(
        "t0",
        TARGET,
        {"name": "img-1", "description": f"copy [{item_token(item_key('t0', present, TARGET))}]",
         "__description": f"copy [{item_token(item_key('t0', present, TARGET))}]"},
    )  # fmt: skip
    setup.write(extra_lines=[f"t0,{setup.image(1)},{SOURCE},{SOURCE}"])
    plan = await setup.plan()
    assert verdicts(plan) == {
        2: Verdict.COPY,
        3: Verdict.PRESENT,
        4: Verdict.REJECTED,
        5: Verdict.REJECTED,
    }
    by_line = {row.line: row for row in plan.rows}
    assert by_line[4].code == "encrypted"
    assert "encrypted" in by_line[4].reason
    assert "migration.csv:5" in by_line[5].reason
    assert "not copied again" in by_line[3].reason
    assert not plan.can_go
    truth = setup.truth()
    assert truth.copies_total == 0
    assert "copy" not in truth.requests


async def test_a_doubtful_image_is_copied_with_preflight_s_flag_as_a_note(tmp_path: Path) -> None:
    """A Windows image can go; the plan shows preflight's flag on its row, not a log line."""
    setup = Setup(tmp_path)
    setup.row(1, __os_type="Windows")
    setup.row(1)
    setup.write()
    plan = await setup.plan()
    assert verdicts(plan) == {2: Verdict.COPY, 3: Verdict.COPY}
    windows, linux = plan.rows
    assert any("Windows" in note for note in windows.notes), windows.notes
    assert linux.notes == ()


async def test_a_clean_list_can_go(tmp_path: Path) -> None:
    """Every row copyable and room in the target: the plan says it can go (exit 0)."""
    setup = Setup(tmp_path)
    for gib in (1, 2, 3):
        setup.row(gib)
    setup.write()
    plan = await setup.plan()
    assert set(verdicts(plan).values()) == {Verdict.COPY}
    assert plan.can_go
    assert plan.quotas[0].adds == 3
    assert plan.quotas[0].enough is True


async def test_a_full_target_quota_means_the_list_cannot_go(tmp_path: Path) -> None:
    """The list adds more images than the target's quota has room for: named, cannot go."""
    setup = Setup(tmp_path)
    for gib in (1, 2, 3):
        setup.row(gib)
    setup.write()
    setup.world.set_quota("t0", TARGET, 2)
    plan = await setup.plan()
    assert set(verdicts(plan).values()) == {Verdict.COPY}
    [check] = plan.quota_short
    assert (check.region, check.adds, check.free) == (TARGET, 3, 2)
    assert not plan.can_go


async def test_filters_narrow_the_plan(tmp_path: Path) -> None:
    """--target-region keeps only the rows going there."""
    setup = Setup(tmp_path)
    setup.row(1, target="cn-east-3")
    setup.row(1, target="cn-south-1")
    setup.write()
    plan = await setup.plan(target_regions=frozenset({"cn-south-1"}))
    assert [row.target_region for row in plan.rows] == ["cn-south-1"]


def test_table_shows_reasons_verbatim() -> None:
    """A reason naming a config section ("[limits]") is printed as is, not read as markup."""
    plan = Plan(Path("m.csv"), Path("m.state"), 5)
    plan.rows.append(
        PlanRow(2, Verdict.REJECTED, "too big (set in [limits] of the config)", "too_large", "t0")
    )
    console = Console(width=200, record=True, file=io.StringIO())
    for part in plan_renderables(plan):
        console.print(part)
    assert "(set in [limits] of the config)" in console.export_text()


# -- credentials ---------------------------------------------------------------------------------


async def test_refused_credentials_block_the_tenant_after_one_request(tmp_path: Path) -> None:
    """A wrong secret: one probe, then the tenant's rows are blocked, with what to fix."""
    setup = Setup(tmp_path)
    setup.row(1)
    setup.row(2)
    setup.write()
    plan = await setup.plan(secret_key="wrong")
    assert set(verdicts(plan).values()) == {Verdict.BLOCKED}
    assert "credentials refused" in plan.tenant_notes["t0"]
    assert sum(setup.truth().auth_failures.values()) == 1


async def test_credentials_refused_by_a_run_are_not_tried_again(tmp_path: Path) -> None:
    """The checkpoint remembers a refused key: the plan makes no call with it."""
    setup = Setup(tmp_path)
    setup.row(1)
    setup.write()
    fingerprint = credential_fingerprint(Credentials(ACCESS_KEY, SECRET_KEY))
    blocked = {
        "t0": BlockedKey(fingerprint=fingerprint, code="APIGW.0301", message="bad key", at=1)
    }
    await save_checkpoint(
        tmp_path / "migration.state",
        [],
        RunMeta(list_path=str(setup.list_path.resolve()), blocked=blocked),
    )
    plan = await setup.plan()
    assert verdicts(plan) == {2: Verdict.BLOCKED}
    assert "not tried again" in plan.tenant_notes["t0"]
    assert sum(setup.truth().requests.values()) == 0


# -- the checkpoint ------------------------------------------------------------------------------


async def test_checkpoint_states_become_done_in_flight_and_failed(tmp_path: Path) -> None:
    """What a run already did is read from the checkpoint; only pending rows are judged."""
    setup = Setup(tmp_path)
    for gib in (1, 2, 3, 4):
        setup.row(gib)
    setup.write()
    done = Item(row_of(setup, 0), Phase.SUCCEEDED, target_image_id="img-x", detail="copied")
    running = Item(row_of(setup, 1), Phase.RUNNING, job_id="j1", size_bytes=2 * GIB,
                   submitted_at=NOW - 60)  # fmt: skip
    failed = Item(row_of(setup, 2), Phase.FAILED, job_id="j2", error_code="IMG.0500",
                  error_message="internal error")  # fmt: skip
    await save_checkpoint(
        tmp_path / "migration.state",
        [done, running, failed],
        RunMeta(list_path=str(setup.list_path.resolve())),
    )
    plan = await setup.plan()
    assert verdicts(plan) == {
        2: Verdict.DONE,
        3: Verdict.IN_FLIGHT,
        4: Verdict.FAILED,
        5: Verdict.COPY,
    }
    failed_row = next(row for row in plan.rows if row.line == 4)
    assert failed_row.code == "IMG.0500"
    assert "--retry-failed" in failed_row.reason
    assert setup.truth().requests.get("job", 0) == 0


async def test_plan_reads_the_checkpoint_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    """A run holding the lock does not stop the plan, and the plan writes nothing there."""
    setup = Setup(tmp_path)
    setup.row(1)
    setup.write()
    state_dir = tmp_path / "migration.state"
    await save_checkpoint(state_dir, [], RunMeta(list_path=str(setup.list_path.resolve())))
    before = {p.name: p.read_bytes() for p in state_dir.iterdir()}
    fd = acquire_lock(state_dir)
    try:
        plan = await setup.plan()
    finally:
        release_lock(fd)
    assert verdicts(plan) == {2: Verdict.COPY}
    assert {p.name: p.read_bytes() for p in state_dir.iterdir()} == before


async def test_no_checkpoint_no_state_dir_created(tmp_path: Path) -> None:
    """Planning a list never run before leaves no state dir behind."""
    setup = Setup(tmp_path)
    setup.row(1)
    setup.write()
    await setup.plan()
    assert not (tmp_path / "migration.state").exists()


# -- the estimate --------------------------------------------------------------------------------


def test_makespan_packs_copies_into_the_slots() -> None:
    """Ten equal copies in five slots take two rounds; copies in flight hold their slot first."""
    assert makespan([10.0] * 10, 5) == 20.0
    assert makespan([10.0] * 5, 5, busy=[30.0]) == 30.0
    assert makespan([40.0, 10.0, 10.0, 10.0, 10.0, 10.0], 5) == 40.0
    assert makespan([], 5) == 0.0


def test_speed_is_assumed_until_enough_copies_have_finished() -> None:
    """Fewer than three samples: the stated assumption; more: the fitted line."""
    assumed = speed_from_samples([(1.0, 10.0)])
    assert assumed.assumed
    assert (assumed.fixed_seconds, assumed.seconds_per_gib) == (
        ASSUMED_FIXED_SECONDS,
        ASSUMED_SECONDS_PER_GIB,
    )
    assert "ASSUMED" in assumed.describe()
    learned = speed_from_samples([(1.0, 70.0), (2.0, 130.0), (4.0, 250.0)])
    assert not learned.assumed
    assert learned.seconds_per_gib == pytest.approx(60.0)
    assert learned.fixed_seconds == pytest.approx(10.0)
    assert "learned from 3 finished copies" in learned.describe()


async def test_estimate_uses_the_speed_the_checkpoint_learned(tmp_path: Path) -> None:
    """With speed samples in the checkpoint, the estimate is sizes x learned speed, packed."""
    setup = Setup(tmp_path)
    for _ in range(10):
        setup.row(10)
    setup.write()
    samples = ((1.0, 70.0), (2.0, 130.0), (4.0, 250.0))  # 10 s + 60 s per GiB
    await save_checkpoint(
        tmp_path / "migration.state",
        [],
        RunMeta(list_path=str(setup.list_path.resolve()), speed_samples=samples),
    )
    plan = await setup.plan()
    [account] = plan.accounts
    assert account.copies == 10
    assert plan.seconds == pytest.approx(2 * (10 + 600), rel=0.01)
    assert plan.speed.learned_from == 3
    document = json.loads(render_plan_json(plan))
    assert document["estimate"]["speed"]["assumed"] is False
    assert render_plan_csv(plan).splitlines()[0].startswith("line,tenant,image_id")


# -- the CLI against the simulator ---------------------------------------------------------------


def plan_cli(cloud: LocalCloud, *extra: str, env: Mapping[str, str] | None = None) -> Completed:
    """``ims-migrate plan`` of the cloud's list, by ``main`` in this process."""
    return cloud.main(
        "plan", str(cloud.list_path), "--config", str(cloud.config_path), *extra, env=env
    )


def test_plan_cli_exit_codes_and_no_mutating_call(local_cloud: LocalCloud) -> None:
    """plan exits 0 when all can go, 1 when a row cannot, 2 without credentials; never copies."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=3)
    cloud.start()
    good = plan_cli(cloud, "--format", "json")
    assert good.returncode == 0, good.stderr
    document = json.loads(good.stdout)
    assert document["counts"]["copy"] == 6
    assert document["estimate"]["speed"]["assumed"] is True
    table = plan_cli(cloud)
    assert table.returncode == 0, table.stderr
    assert "whole list: about" in table.stdout
    assert "ASSUMED" in table.stdout
    with cloud.list_path.open("a") as handle:
        handle.write(f"t0,{cloud.image('t0', 1)},cn-north-4,cn-north-4\n")
    bad = plan_cli(cloud, "--format", "csv")
    assert bad.returncode == 1, bad.stderr
    assert "bad_row" in bad.stdout
    env = {k: v for k, v in cloud.env().items() if not k.startswith("E2E_T1")}
    missing = plan_cli(cloud, env=env)
    assert missing.returncode == 2
    assert "E2E_T1_AK" in missing.stderr
    truth = cloud.truth()
    assert truth.copies_total == 0
    assert "copy" not in truth.requests
    assert not cloud.state_dir.exists()


@pytest.mark.parametrize(
    ("filters", "words"),
    [
        (("--tenant", "alpah"), "--tenant alpah: no row of"),
        (("--source-region", "cn-south-1"), "--source-region cn-south-1: no row of"),
        (("--tenant", "alpha", "--target-region", "cn-south-1"), "matches all of these"),
    ],
    ids=["typo", "absent-region", "together"],
)
def test_plan_refuses_a_filter_that_matches_no_row_as_run_does(
    local_cloud: LocalCloud, filters: tuple[str, ...], words: str
) -> None:
    """A filter no row matches is a typo, not an empty plan that "can go" (exit 0): plan
    refuses it with run's exit code and words, before any call."""
    cloud = local_cloud
    cloud.account("alpha")
    cloud.account("beta")
    cloud.row("alpha", 1, target="cn-east-3")
    cloud.row("beta", 1, target="cn-south-1")
    cloud.start()
    planned = plan_cli(cloud, *filters)
    ran = cloud.run(*filters, "--quiet")
    assert (planned.returncode, ran.returncode) == (2, 2)
    assert words in planned.stderr
    assert planned.stderr.splitlines()[-1] == ran.stderr.splitlines()[-1]
    if filters[:2] == ("--tenant", "alpah"):
        assert "did you mean alpha?" in planned.stderr
    assert planned.stdout == ""
    assert cloud.truth().requests == {}


def test_plan_counts_rows_no_longer_listed_as_status_does(local_cloud: LocalCloud) -> None:
    """The list's own bad rows are in the list: after a run, plan and status both count 0
    items no longer listed; a row then removed from the list (and a run) is 1 for both."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.row("t0", 1)
    cloud.start()
    with cloud.list_path.open("a") as handle:
        handle.write("t0,,cn-north-4,cn-east-3\n")  # no image_id
        handle.write(f"t0,{cloud.image('t0', 1)},cn-north-4,\n")  # no target_region

    def not_listed() -> tuple[int, int]:
        planned = plan_cli(cloud, "--format", "json")
        status = cloud.main("status", str(cloud.list_path), "--format", "json")
        assert status.returncode == 1, status.stderr
        return (
            json.loads(planned.stdout)["not_listed"],
            json.loads(status.stdout)["summary"]["not_listed"],
        )

    assert cloud.run().returncode == 1  # the two bad rows
    assert not_listed() == (0, 0)
    del cloud.rows[0]
    lines = cloud.list_path.read_text().splitlines(keepends=True)
    cloud.list_path.write_text("".join(lines[:1] + lines[2:]))
    assert cloud.run().returncode == 1
    assert not_listed() == (1, 1)


async def test_a_bad_row_is_counted_under_its_tenant_when_it_can_be_read(tmp_path: Path) -> None:
    """A bad row whose tenant cell reads (an unknown region, a tenant not configured) counts
    under that tenant in the by-tenant summary; only a row whose tenant cannot be read (not a
    string) goes under "(bad row)"."""
    setup = Setup(tmp_path)
    good = setup.image(1)
    lines = [
        {"tenant": "t0", "image_id": good, "source_region": SOURCE, "target_region": TARGET},
        {"tenant": "t0", "image_id": setup.image(1), "source_region": SOURCE,
         "target_region": "nowhere"},
        {"tenant": "tx", "image_id": setup.image(1), "source_region": SOURCE,
         "target_region": TARGET},
        {"tenant": 5, "image_id": setup.image(1), "source_region": SOURCE,
         "target_region": TARGET},
    ]  # fmt: skip
    path = tmp_path / "migration.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    environ = {DEFAULT_AK_ENV: ACCESS_KEY, DEFAULT_SK_ENV: SECRET_KEY}
    plan = await make_plan(
        PlanRequest(path, CONFIG, environ),
        clouds=in_memory_clouds(setup.world),
        clock=VirtualClock(NOW),
    )
    assert verdicts(plan) == {1: Verdict.COPY, 2: Verdict.REJECTED, 3: Verdict.REJECTED,
                              4: Verdict.REJECTED}  # fmt: skip
    by_tenant = {tenant: (c["copy"], c["rejected"]) for tenant, c in plan.by("tenant").items()}
    assert by_tenant == {"(bad row)": (0, 1), "t0": (1, 1), "tx": (0, 1)}
    assert json.loads(render_plan_json(plan))["by_tenant"]["tx"]["rejected"] == 1
