"""Every row accounted for, every view telling the same stored truth (issue 14).

The CLI's ``main(argv)`` in process against the in-memory cloud on virtual time, judged on
what the user sees: the report in every format, ``status`` (its words and its exit code) and
the run's closing lines.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from orchestrator.core.model import item_key
from orchestrator.simulator.imageops import UPDATE
from tests.inprocess import Completed, LocalCloud

HEADER = "tenant,image_id,source_region,target_region,description"
NORTH, EAST = "cn-north-4", "cn-east-3"
WRONG_SECRET = "this-is-not-the-secret-key-of-t1-000000"


def report(cloud: LocalCloud, fmt: str) -> Completed:
    return cloud.main("report", str(cloud.list_path), "--format", fmt)


def status(cloud: LocalCloud, *extra: str) -> Completed:
    return cloud.main("status", str(cloud.list_path), *extra)


def csv_lines(cloud: LocalCloud) -> list[int]:
    """The ``line`` of every row of the CSV report."""
    return [int(r["line"]) for r in csv.DictReader(io.StringIO(report(cloud, "csv").stdout))]


def report_lines(cloud: LocalCloud) -> dict[str, list[int]]:
    """The list lines each report format has a row for (in the order given)."""
    as_json = json.loads(report(cloud, "json").stdout)["items"]
    md = report(cloud, "md").stdout.split("## Items")[1]
    html = report(cloud, "html").stdout.split('<section id="items">')[1]
    return {
        "csv": csv_lines(cloud),
        "json": [int(r["line"]) for r in as_json],
        "md": [int(m) for m in re.findall(r"^\| (\d+) \|", md, flags=re.MULTILINE)],
        "html": [int(m) for m in re.findall(r"<tr><td[^>]*>(\d+)</td>", html)],
    }


def bad_row_list(cloud: LocalCloud) -> dict[int, str]:
    """A list of good and bad rows (one of each kind); line -> what the report should say."""
    cloud.account("t0")
    good = [cloud.image("t0", 1) for _ in range(2)]
    dup = cloud.image("t0", 1)
    cloud.start()
    lines = [
        HEADER,
        f"t0,{good[0]},{NORTH},{EAST},",
        f"t0,{good[1]},{NORTH},{NORTH},",  # target == source
        f"t0,{dup},{NORTH},cn-east3,",  # unknown region
        f't0,{dup},{NORTH},{EAST},"a <b> tag"',  # bad description
        f"t0,,{NORTH},{EAST},",  # no image id: no key
        f"t0,not an id,{NORTH},{EAST},",  # malformed image id: no key
        f"t0,{good[0]},{NORTH},{EAST},",  # duplicate of line 2
    ]
    cloud.list_path.write_text("\n".join(lines) + "\n")
    return {
        2: "succeeded",
        3: "target_region: same as source_region",
        4: 'target_region: unknown region "cn-east3"',
        5: "description:",
        6: "image_id: missing",
        7: 'image_id: "not an id" is not an image id',
        8: "image_id: duplicate of line 2",
    }


def test_every_data_line_has_one_row_in_every_report_format(local_cloud: LocalCloud) -> None:
    """Good, bad and key-less rows: each line of the list is one row of csv/json/md/html."""
    expected = bad_row_list(local_cloud)
    done = local_cloud.run("--progress", "none")
    assert done.returncode == 1, done.stderr
    for fmt, lines in report_lines(local_cloud).items():
        assert sorted(lines) == sorted(expected), fmt


def test_a_rejected_row_says_its_problem_in_the_report(local_cloud: LocalCloud) -> None:
    """A rejected row's detail is the file:line: column: problem text the terminal printed."""
    expected = bad_row_list(local_cloud)
    done = local_cloud.run("--progress", "none")
    rows = {
        int(r["line"]): r for r in csv.DictReader(io.StringIO(report(local_cloud, "csv").stdout))
    }
    for line, words in expected.items():
        if words == "succeeded":
            assert rows[line]["state"] == "succeeded"
            continue
        assert rows[line]["state"] == "rejected"
        detail = rows[line]["detail"]
        assert detail.startswith(f"{local_cloud.list_path}:{line}: "), detail
        assert words in detail
        assert any(detail.startswith(said) for said in done.stderr.splitlines())  # same words
    assert rows[7]["image_id"] == "not an id"  # what is known of a key-less line


def test_status_after_bad_rows_says_exit_1_and_exits_1(local_cloud: LocalCloud) -> None:
    """After a run that exited 1 for bad rows, status says so, counts them and exits 1."""
    bad_row_list(local_cloud)
    done = local_cloud.run("--progress", "none")
    shown = status(local_cloud)
    assert done.returncode == shown.returncode == 1, shown.stdout
    assert "last run: exit 1: 6 rejected" in shown.stdout
    assert "7 items" in shown.stdout
    document = json.loads(status(local_cloud, "--format", "json").stdout)
    assert document["last_exit"] == 1
    assert document["summary"]["by_state"]["rejected"] == 6
    assert sorted(i["line"] for i in document["items"]) == [3, 4, 5, 6, 7, 8]


def test_the_closing_line_is_the_stored_outcome(local_cloud: LocalCloud) -> None:
    """The run's last words, status and the HTML report show one stored exit and reason."""
    bad_row_list(local_cloud)
    done = local_cloud.run("--progress", "none")
    assert "exit 1: 6 rejected. Next: fix the rejected rows" in done.stdout
    assert "--retry-failed" not in done.stdout  # nothing failed
    assert "exit 1: 6 rejected" in status(local_cloud).stdout
    assert "Last run: exit 1 (6 rejected)" in report(local_cloud, "html").stdout


def test_a_list_of_only_bad_rows_exits_1_everywhere(local_cloud: LocalCloud) -> None:
    """Only bad rows: the run, the stored meta and status all say exit 1."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    local_cloud.list_path.write_text(f"{HEADER}\nt0,{image},{NORTH},cn-east3,\n")
    done = local_cloud.run("--progress", "none")
    assert done.returncode == 1
    checkpoint = json.loads((local_cloud.state_dir / "checkpoint.json").read_text())
    assert checkpoint["meta"]["last_exit"] == 1
    assert status(local_cloud).returncode == 1


def test_a_blocked_tenants_rows_carry_the_refusal(local_cloud: LocalCloud) -> None:
    """A tenant whose key is refused: its rows say so and what to fix, in the report and status."""
    local_cloud.populate(tenants=2, per_tenant=2)
    local_cloud.start()
    done = local_cloud.run("--progress", "none", env=local_cloud.env(E2E_T1_SK=WRONG_SECRET))
    assert done.returncode == 1
    assert "blocked tenant(s): t1 (2 not started)" in done.stdout
    rows = list(csv.DictReader(io.StringIO(report(local_cloud, "csv").stdout)))
    blocked = [r for r in rows if r["tenant"] == "t1"]
    assert len(blocked) == 2
    for row in blocked:
        assert row["state"] == "pending"
        assert row["detail"].startswith("blocked: the credentials of tenant t1 were refused (")
        assert "fix them, then run again" in row["detail"]
        assert row["error_code"]
    shown = status(local_cloud)
    assert shown.returncode == 1
    assert "blocked: the credentials of tenant t1 were refused" in shown.stdout


def test_status_exits_0_when_every_item_succeeded(local_cloud: LocalCloud) -> None:
    """A finished list: status exits 0."""
    local_cloud.populate(tenants=1, per_tenant=2)
    local_cloud.start()
    assert local_cloud.run("--progress", "none").returncode == 0
    assert status(local_cloud).returncode == 0


def test_status_exits_75_with_work_left(local_cloud: LocalCloud) -> None:
    """Stopped by its deadline with copies in flight: status exits 75 (run again later)."""
    local_cloud.params["seconds_per_gib"] = 1.0
    local_cloud.account("t0")
    for _ in range(3):
        local_cloud.row("t0", 20)
    local_cloud.start()
    done = local_cloud.run("--progress", "none", "--deadline", "1s")
    assert done.returncode == 75, done.stdout
    shown = status(local_cloud)
    assert shown.returncode == 75, shown.stdout


def test_status_help_has_its_own_description_and_exit_codes() -> None:
    """`status --help` describes status and its own exit codes, not run's."""
    import contextlib

    from orchestrator.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["status", "--help"])
    text = " ".join(out.getvalue().split())
    assert "without calling the cloud" in text
    assert "exit codes of status" in text
    assert "75 work left" in text
    assert "lock held" not in text


def test_rejected_line_whose_key_is_taken_gets_its_own_row(local_cloud: LocalCloud) -> None:
    """A succeeded row later edited into a bad one: the line is rejected, the copy stays
    reported as no longer listed, and the report still has one row per line."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    local_cloud.list_path.write_text(f"{HEADER}\nt0,{image},{NORTH},{EAST},\n")
    assert local_cloud.run("--progress", "none").returncode == 0
    local_cloud.list_path.write_text(f'{HEADER}\nt0,{image},{NORTH},{EAST},"<b>"\n')
    assert local_cloud.run("--progress", "none").returncode == 1
    rows = list(csv.DictReader(io.StringIO(report(local_cloud, "csv").stdout)))
    states = sorted((r["state"], r["detail"].endswith("no longer listed")) for r in rows)
    assert states == [("rejected", False), ("succeeded", True)]
    assert item_key("t0", image, EAST) in {f"t0/{r['image_id']}/{r['target_region']}" for r in rows}


def csv_text(rows: list[str]) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def test_a_fixed_row_runs_and_its_rejected_line_is_gone(local_cloud: LocalCloud) -> None:
    """A key-less line fixed in the list: the copy is made, the old rejected row is not shown."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    local_cloud.list_path.write_text(csv_text([f"t0,,{NORTH},{EAST},"]))
    assert local_cloud.run("--progress", "none").returncode == 1
    local_cloud.list_path.write_text(csv_text([f"t0,{image},{NORTH},{EAST},"]))
    assert local_cloud.run("--progress", "none").returncode == 0
    assert csv_lines(local_cloud) == [2]
    assert status(local_cloud).returncode == 0


def test_a_row_fixed_in_the_config_is_judged_again(local_cloud: LocalCloud, tmp_path: Path) -> None:
    """A row rejected for an unconfigured tenant is copied once the tenant is configured."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    local_cloud.list_path.write_text(csv_text([f"t0,{image},{NORTH},{EAST},"]))
    config = local_cloud.config_path.read_text()
    local_cloud.config_path.write_text(config.replace("[tenants.t0]", "[tenants.other]"))
    assert local_cloud.run("--progress", "none").returncode == 1
    local_cloud.config_path.write_text(config)
    done = local_cloud.run("--progress", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert status(local_cloud).returncode == 0
    del tmp_path


def test_a_filter_that_matches_no_row_is_a_usage_error(local_cloud: LocalCloud) -> None:
    """`--tenant alpah` (a typo): exit 2 with a suggestion, nothing copied, even with --quiet."""
    local_cloud.account("alpha")
    local_cloud.row("alpha", 1)
    local_cloud.start()
    done = local_cloud.run("--tenant", "alpah", "--quiet")
    assert done.returncode == 2
    assert "--tenant alpah: no row of" in done.stderr
    assert "did you mean alpha?" in done.stderr
    assert not local_cloud.truth().copies


def test_filters_that_match_no_row_together_are_a_usage_error(local_cloud: LocalCloud) -> None:
    """Each filter value is in the list, but no row has them all: exit 2, nothing copied."""
    local_cloud.account("alpha")
    local_cloud.account("beta")
    local_cloud.row("alpha", 1, target="cn-east-3")
    local_cloud.row("beta", 1, target="cn-south-1")
    local_cloud.start()
    done = local_cloud.run("--tenant", "alpha", "--target-region", "cn-south-1")
    assert done.returncode == 2
    assert "matches all of these" in done.stderr
    assert not local_cloud.truth().copies


def test_progress_and_metrics_refresh_every_30_s_while_a_copy_waits(
    local_cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copy reconciling for 10 minutes (a 503 on its POST): a progress line and a metrics
    write at least every 30 s of the run's clock, and the ETA counts the wait."""
    local_cloud.timing["settle"] = 600
    local_cloud.account("t0")
    local_cloud.row("t0", 1)
    local_cloud.faults = {"next": {"copy": ["503"]}}
    local_cloud.start()
    writes: list[str] = []
    monkeypatch.setattr(
        "orchestrator.cli.run.write_metrics", lambda _path, text: writes.append(text)
    )
    started = local_cloud.clock.now()
    done = local_cloud.run("--progress", "plain", "--metrics-file", str(tmp_path / "m.prom"))
    assert done.returncode == 0, done.stderr
    took = local_cloud.clock.now() - started
    assert took >= 600
    progress = [line for line in done.stderr.splitlines() if line.startswith("progress ")]
    assert len(progress) >= took // 30
    assert len(writes) >= took // 30
    assert any("(reconciling)" in line for line in progress)


def test_status_names_what_a_reconciling_item_waits_for_and_until(
    local_cloud: LocalCloud,
) -> None:
    """Stopped while a copy's outcome is unknown: status's waiting section and its JSON name
    the target region, the deadline and the HTTP error that started the wait."""
    local_cloud.timing["settle"] = 3600
    local_cloud.account("t0")
    local_cloud.row("t0", 1)
    local_cloud.faults = {"next": {"copy": ["503"]}}
    local_cloud.start()
    done = local_cloud.run("--progress", "none", "--deadline", "60")
    assert done.returncode == 75, done.stdout
    shown = status(local_cloud)
    assert shown.returncode == 75
    assert "waiting (1):" in shown.stdout
    words = re.search(r"reconciling: looking for the copy in cn-east-3 until (\S+) after (.*)",
                      shown.stdout)  # fmt: skip
    assert words is not None, shown.stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", words.group(1))
    assert "503" in words.group(2)
    assert words.group(2).endswith("on the copy request")
    (item,) = json.loads(status(local_cloud, "--format", "json").stdout)["items"]
    assert item["line"] == 2
    assert item["detail"].startswith("reconciling: looking for the copy in cn-east-3 until ")


def test_status_names_the_copies_to_look_at(local_cloud: LocalCloud) -> None:
    """Copied but to look at (a mismatch, a step not done): the run exits 1 for them, and
    status names each one (line, what differs or was not done), in its table and its JSON."""
    cloud = local_cloud
    cloud.account("t0")
    differs = cloud.row("t0", 1, checksum="aaa")
    tagged = cloud.row("t0", 1, tags=["env.prod"])
    cloud.row("t0", 1)
    cloud.start()
    assert cloud.world is not None
    cloud.world.differ_copies(differs, {"checksum": "bbb"})
    cloud.world.deny("t0", UPDATE)
    done = cloud.run("--progress", "none")
    assert done.returncode == 1
    assert "2 copied but to look at" in done.stdout
    shown = status(cloud)
    assert shown.returncode == 1
    assert "copied, to look at (2):" in shown.stdout
    assert f"t0 {differs} -> {EAST} (line 2): verify mismatch: checksum: source aaa, copy bbb" in (
        shown.stdout
    )
    assert f"t0 {tagged} -> {EAST} (line 3): tags not carried: refused" in shown.stdout
    assert "(line 4)" not in shown.stdout
    document = json.loads(status(cloud, "--format", "json").stdout)
    looks = document["to_look_at"]
    assert [(r["line"], r["state"], r["verify"]) for r in looks] == [
        (2, "succeeded", "mismatch"),
        (3, "succeeded", "ok"),
    ]
    assert looks[1]["notes"].startswith("tags not carried: refused")


def test_attempts_count_the_copy_requests_made(local_cloud: LocalCloud) -> None:
    """attempts counts copy requests made: 0 for a rejected row and for a blocked tenant's row
    never sent; 1 for a row whose one copy request was refused (now pending again); 1 for a
    copy made. In the CSV, the JSON report and status's JSON alike."""
    cloud = local_cloud
    for name in ("t0", "t1", "t2"):
        cloud.account(name)
    copied = cloud.row("t0", 1)
    refused = cloud.row("t1", 1)
    never = cloud.row("t2", 1)
    same = cloud.image("t0", 1)
    cloud.start()
    with cloud.list_path.open("a") as handle:
        handle.write(f"t0,{same},{NORTH},{NORTH}\n")  # target == source: rejected
    assert cloud.world is not None
    cloud.world.account("t1").denied.add("copy")  # the copy request is refused (403)
    done = cloud.run("--progress", "none", env=cloud.env(E2E_T2_SK=WRONG_SECRET))
    assert done.returncode == 1, done.stdout
    assert cloud.truth().requests.get("copy") == 2  # t0's copy and t1's refused one
    expected = {copied: 1, refused: 1, never: 0, same: 0}

    def attempts(records: list[dict[str, object]]) -> dict[object, int]:
        return {r["image_id"]: int(str(r["attempts"])) for r in records}

    rows = list(csv.DictReader(io.StringIO(report(cloud, "csv").stdout)))
    assert attempts(list(rows)) == expected
    assert attempts(json.loads(report(cloud, "json").stdout)["items"]) == expected
    in_status = json.loads(status(cloud, "--format", "json").stdout)["items"]
    assert attempts([*in_status, *[r for r in rows if r["image_id"] == copied]]) == expected


def test_the_eta_leaves_out_a_blocked_tenants_items(local_cloud: LocalCloud) -> None:
    """A tenant whose key is refused copies nothing in this run: the run's progress lines
    leave its items out of the ETA and say so, rather than counting them as work to wait for."""
    local_cloud.populate(tenants=2, per_tenant=2)
    local_cloud.start()
    done = local_cloud.run("--progress", "plain", env=local_cloud.env(E2E_T1_SK=WRONG_SECRET))
    assert done.returncode == 1
    last = [line for line in done.stderr.splitlines() if line.startswith("progress ")][-1]
    assert last.endswith("eta done (2 items of blocked tenants not counted)"), last
