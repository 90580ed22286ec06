"""``ims-migrate demo``: a list discovered in the embedded simulator, migrated, checked.

It writes a scenario and a config into the work folder, serves the simulator on 127.0.0.1 (any
free port), builds the migration list with ``discover`` (every tenant's images of
``DEMO_SOURCES`` to ``DEMO_TARGETS``; the encrypted, ISO, queued and full-ECS images there are
left out by reason), appends the scenario's planted bad rows, runs the migration through the
same code path as ``run``, then compares every row with what it was planted to do and the
simulator's ground truth with the invariants (at most 5 copies in flight per tenant, no item
submitted twice).
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import UsageError
from orchestrator.commands.discover import DiscoverRequest, DiscoverResult, discover
from orchestrator.commands.run import RunRequest, RunSummary
from orchestrator.config import Config
from orchestrator.config_file import load_config
from orchestrator.core.discovery import LIST_COLUMNS
from orchestrator.simulator.app import build_app, serve
from orchestrator.simulator.scenario import (
    DEMO_REGIONS,
    build_world,
    dump_scenario,
    generate_demo_scenario,
)
from orchestrator.simulator.truth import Truth

LIST = "migration.csv"
CONFIG = "ims-migrate.toml"
SCENARIO = "scenario.json"
DEMO_SOURCES = DEMO_REGIONS[:2]  # cn-north-4, cn-east-3
DEMO_TARGETS = DEMO_REGIONS[2:]  # cn-south-1, ap-southeast-1

CONFIG_TEMPLATE = """\
# Written by `ims-migrate demo`: the embedded simulator on 127.0.0.1:{port}.
[defaults]
agency_name = "ims_admin_agency"
max_concurrent_copies = 5

[endpoints]
ims = "http://127.0.0.1:{port}/ims/{{region}}"
iam = "http://127.0.0.1:{port}/iam"

[rate]
requests_per_second = 500

# The simulator runs in accelerated time (a copy takes seconds): small intervals.
[timing]
poll_min = 0.1
poll_max = 2
settle = 3
backoff_max = 2
request_timeout = 2
job_deadline = 120
{tenants}"""

TENANT_TEMPLATE = """
[tenants.{name}]
access_key_env = "IMS_DEMO_{upper}_AK"
secret_key_env = "IMS_DEMO_{upper}_SK"
"""


@dataclass
class DemoOutcome:
    summary: RunSummary
    truth: Truth
    elapsed: float
    workdir: Path
    discovery: DiscoverResult
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


REHEARSAL_HEADER = """\
# Written by `ims-migrate simulator`: a config for rehearsing against it (127.0.0.1:{port}).
# Its clock is accelerated (a copy takes seconds), so the timings are short; the real
# cloud's defaults (a 6 h settle, say) would park an item for hours after one fault.
"""


def rehearsal_config(scenario: Mapping[str, Any], port: int) -> tuple[str, dict[str, str]]:
    """The config (TOML) and the environment (each account's key variables) that point
    ``run``, ``plan`` and ``discover`` at a simulator serving ``scenario`` on ``port``."""
    tenants = "".join(
        TENANT_TEMPLATE.format(name=a["name"], upper=a["name"].upper())
        for a in scenario["accounts"]
    )
    body = CONFIG_TEMPLATE.format(port=port, tenants=tenants).split("\n", 1)[1]
    return REHEARSAL_HEADER.format(port=port) + body, _environ(scenario)


def _environ(scenario: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    for account in scenario["accounts"]:
        upper = account["name"].upper()
        env[f"IMS_DEMO_{upper}_AK"] = account["access_key"]
        env[f"IMS_DEMO_{upper}_SK"] = account["secret_key"]
    return env


def check_outcome(
    summary: RunSummary, rows: list[dict[str, str]], truth: Truth, cap: int
) -> list[str]:
    """Every way the run differs from what the demo planted, in words."""
    mismatches = []
    bad_lines = {problem.line for problem in summary.problems}
    by_line = {item.row.line: item for item in summary.items}
    for line, row in enumerate(rows, start=2):
        expect = row["expect"]
        item = by_line.get(line)
        if item is None:
            got = "rejected" if line in bad_lines else "missing"
        else:
            got = item.phase.public
        if got != expect:
            why = f" ({item.error_message or item.detail})" if item else ""
            mismatches.append(f"line {line} {row['image_id']}: expected {expect}, got {got}{why}")
    for account, peak in truth.max_in_flight.items():
        if peak > cap:
            mismatches.append(f"{account}: {peak} copies in flight at once (cap {cap})")
    mismatches.extend(f"{key}: submitted more than once" for key in truth.duplicates)
    return mismatches


def prepare(workdir: Path, seed: int) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A fresh scenario in ``workdir`` (the previous demo's list and state are removed) and the
    planted bad rows (``expect`` rejected) of its generated list."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        raise UsageError(f"--workdir {workdir}: {exc.strerror or exc}; give a folder") from None
    state = workdir / "migration.state"
    if state.exists():
        shutil.rmtree(state)  # the lock file goes with its folder: no run can be holding it
    (workdir / LIST).unlink(missing_ok=True)
    scenario, rows = generate_demo_scenario(seed)
    dump_scenario(scenario, workdir / SCENARIO)
    return scenario, [row for row in rows if row["expect"] == "rejected"]


async def discover_list(
    workdir: Path,
    config: Config,
    env: Mapping[str, str],
    planted: Sequence[dict[str, str]],
    *,
    clouds: CloudFactory = open_clouds,
) -> tuple[DiscoverResult, list[dict[str, str]]]:
    """``discover --output`` against the simulator, then the planted bad rows appended; the
    rows of the list in file order, each with what it is expected to end as."""
    request = DiscoverRequest(
        config=config,
        environ=env,
        source_regions=DEMO_SOURCES,
        target_regions=DEMO_TARGETS,
        list_path=workdir / LIST,
    )
    result = await discover(request, clouds=clouds)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LIST_COLUMNS, extrasaction="ignore")
    writer.writerows(planted)
    with (workdir / LIST).open("a", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
    found = [{"image_id": row.image_id, "expect": "succeeded"} for row in result.added]
    return result, [*found, *planted]


async def run_demo(
    workdir: Path,
    *,
    seed: int,
    run: Callable[[RunRequest], Awaitable[RunSummary]],
    environ: Mapping[str, str] | None = None,
    on_discovered: Callable[[DiscoverResult], None] | None = None,
) -> DemoOutcome:
    workdir = await anyio.to_thread.run_sync(workdir.absolute)  # a blocking call (ASYNC240)
    scenario, planted = await anyio.to_thread.run_sync(prepare, workdir, seed)
    world, faults = build_world(scenario)
    runner, port = await serve(build_app(world, faults))
    try:
        tenants = "".join(
            TENANT_TEMPLATE.format(name=a["name"], upper=a["name"].upper())
            for a in scenario["accounts"]
        )
        (workdir / CONFIG).write_text(CONFIG_TEMPLATE.format(port=port, tenants=tenants))
        env = {**(environ or {}), **_environ(scenario)}
        config = load_config(workdir / CONFIG, env, workdir)
        discovery, rows = await discover_list(workdir, config, env, planted)
        if on_discovered is not None:
            on_discovered(discovery)
        started = time.monotonic()
        summary = await run(RunRequest(list_path=workdir / LIST, config=config, environ=env))
        elapsed = time.monotonic() - started
        truth = world.truth(time.time())
    finally:
        await runner.cleanup()
    cap = int(scenario["params"].get("cap", 5))
    mismatches = check_outcome(summary, rows, truth, cap)
    if discovery.failures:
        mismatches += [f"discover: {t.tenant} {t.region}: {t.error}" for t in discovery.failures]
    return DemoOutcome(summary, truth, elapsed, workdir, discovery, mismatches)
