"""``ims-migrate discover`` at the command line and in the demo: in process, on the in-memory
cloud (``tests.inprocess``), no simulator process."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from orchestrator.cli.discover import cmd_discover
from orchestrator.cli.parser import build_parser
from orchestrator.commands.clouds import Seams
from orchestrator.commands.demo import discover_list, prepare
from orchestrator.commands.plan import PlanRequest, Verdict, make_plan
from orchestrator.config import TenantConfig
from orchestrator.core.exits import ExitCode
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.simulator.scenario import build_world
from tests.inprocess import LocalCloud
from tests.test_discover import CONFIG, NOW, SOURCE, TARGET
from tests.virtual_clock import VirtualClock


def test_the_cli_writes_appends_and_refuses(local_cloud: LocalCloud) -> None:
    """discover --output: exit 0 and the summary; --append again: nothing to add; --output on
    the file: exit 2; a refused tenant: exit 1 and named on stderr."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.account("t1")
    cloud.image("t0", 5)
    cloud.image("t0", 5, __system__cmkid="kms-1")
    cloud.image("t1", 5)
    cloud.start()
    fleet = cloud.root / "fleet.csv"
    args = ["discover", "--config", str(cloud.config_path), "--source-region", SOURCE,
            "--target-region", TARGET]  # fmt: skip
    done = cloud.main(*args, "--output", str(fleet))
    assert done.returncode == ExitCode.OK, done.stderr
    assert (
        "3 images found, 0 not matching the filters; 3 images x 1 target region = 3 rows: "
        "2 listed, 0 already in the list, 1 left out"
    ) in done.stdout, done.stdout
    assert "2 rows (one per image and target region) written to" in done.stdout
    assert len(fleet.read_text().splitlines()) == 3
    again = cloud.main(*args, "--append", str(fleet), "--quiet")
    assert (again.returncode, again.stdout) == (ExitCode.OK, "")
    assert cloud.main(*args, "--output", str(fleet)).returncode == ExitCode.USAGE
    refused = cloud.main(*args, "--append", str(fleet), env=cloud.env(E2E_T1_SK="wrong"))
    assert refused.returncode == ExitCode.ATTENTION
    assert "tenant t1" in refused.stderr


async def test_the_demo_list_is_discovered_and_plan_judges_it_as_the_demo_expects(
    tmp_path: Path,
) -> None:
    """The demo's discovered rows would all be copied; its appended planted rows rejected."""
    scenario, planted = prepare(tmp_path, 7)
    world, _ = build_world(scenario)
    env = {f"K_{a['name']}": a["access_key"] for a in scenario["accounts"]} | {
        f"S_{a['name']}": a["secret_key"] for a in scenario["accounts"]
    }
    tenants = {a["name"]: TenantConfig(a["name"], f"K_{a['name']}", f"S_{a['name']}")
               for a in scenario["accounts"]}  # fmt: skip
    config = replace(CONFIG, tenants=tenants)
    discovery, rows = await discover_list(
        tmp_path, config, env, planted, clouds=in_memory_clouds(world)
    )
    assert len(discovery.added) > 60
    assert len(rows) == len(discovery.added) + len(planted)
    plan = await make_plan(
        PlanRequest(tmp_path / "migration.csv", config, env),
        clouds=in_memory_clouds(world),
        clock=VirtualClock(NOW),
    )
    got = {row.line: row.verdict for row in plan.rows}
    expected = {
        line: Verdict.COPY if row["expect"] == "succeeded" else Verdict.REJECTED
        for line, row in enumerate(rows, start=2)
    }
    assert got == expected


def test_a_terminal_sees_a_line_per_tenant_and_region(local_cloud: LocalCloud) -> None:
    """On a terminal, each listing says when it starts and how many images it found."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.image("t0", 5)
    cloud.start()
    assert cloud.world is not None
    args = build_parser().parse_args(
        ["discover", "--config", str(cloud.config_path), "--source-region", SOURCE,
         "--target-region", TARGET, "--output", str(cloud.root / "fleet.csv")]
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    seams = Seams(in_memory_clouds(cloud.world), cloud.clock)
    terminal = Console(file=err, force_terminal=True, width=120)
    code = cmd_discover(args, cloud.env(), Console(file=out), terminal, seams)
    assert code == ExitCode.OK
    assert f"t0 {SOURCE}: listing private images..." in err.getvalue()
    assert f"t0 {SOURCE}: 1 private image\n" in err.getvalue()
