"""The smaller truths of issue 14 (its point 11), through the CLI's main in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.inprocess import LocalCloud
from tests.test_views_e2e import HEADER, NORTH, report, status

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: printed raw, it reverses the rest of a terminal line


def test_a_ca_bundle_that_is_not_pem_exits_2_before_the_state_dir(
    local_cloud: LocalCloud,
) -> None:
    """A ca_bundle that is not PEM: exit 2 naming it, no state dir, no request."""
    local_cloud.populate(tenants=1, per_tenant=1)
    local_cloud.start()
    (local_cloud.root / "ca.pem").write_text("not a certificate\n")
    text = local_cloud.config_path.read_text()
    text = text.replace("[endpoints]\n", '[endpoints]\nca_bundle = "ca.pem"\n')
    local_cloud.config_path.write_text(text)
    done = local_cloud.run("--progress", "none")
    assert done.returncode == 2, done.stderr
    assert "ca_bundle: 'ca.pem' is not a PEM bundle of CA certificates" in done.stderr
    assert not local_cloud.state_dir.exists()
    assert sum(local_cloud.truth().requests.values()) == 0


def test_a_folder_given_as_the_list_is_named_as_a_folder(local_cloud: LocalCloud) -> None:
    """`run some.csv/` where it is a folder: exit 2, "is a folder", not "no such file"."""
    local_cloud.populate(tenants=1, per_tenant=1)
    local_cloud.start()
    folder = local_cloud.root / "lists.csv"
    folder.mkdir()
    done = local_cloud.main("run", str(folder), "--config", str(local_cloud.config_path))
    assert done.returncode == 2
    assert f"{folder}: is a folder, not a migration list" in done.stderr


def test_an_empty_state_dir_is_refused(
    local_cloud: LocalCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--state-dir ""` would write into the current folder: a usage error."""
    local_cloud.populate(tenants=1, per_tenant=1)
    local_cloud.start()
    with pytest.raises(SystemExit) as stopped:
        local_cloud.run("--state-dir", "")
    assert stopped.value.code == 2
    assert "--state-dir: is empty" in capsys.readouterr().err


def test_a_jsonl_priority_of_5_0_is_5(local_cloud: LocalCloud) -> None:
    """JSON has one number type: `"priority": 5.0` is accepted like 5."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    path = local_cloud.root / "migration.jsonl"
    row = {"tenant": "t0", "image_id": image, "source_region": NORTH,
           "target_region": "cn-east-3", "priority": 5.0}  # fmt: skip
    path.write_text(json.dumps(row) + "\n")
    done = local_cloud.main("run", str(path), "--config", str(local_cloud.config_path))
    assert done.returncode == 0, done.stderr


def test_list_text_is_escaped_in_markdown_and_not_raw_on_the_terminal(
    local_cloud: LocalCloud,
) -> None:
    """A `<script>` and a right-to-left override from the list: escaped in the md report's
    per-item rows, never printed raw by the run or status."""
    local_cloud.account("t0")
    image = local_cloud.image("t0", 1)
    local_cloud.start()
    name = f"<script>x</script>{RLO}evil"
    lines = [f"{HEADER},name", f"t0,{image},{NORTH},cn-east-3,,{name}"]
    local_cloud.list_path.write_text("\n".join(lines) + "\n")
    done = local_cloud.run("--progress", "none")
    assert done.returncode == 1  # the name is refused by IMS's rules: rejected
    assert RLO not in done.stdout + done.stderr
    assert RLO not in status(local_cloud).stdout
    md = report(local_cloud, "md").stdout
    items = md.split("## Items")[1]
    assert "&lt;script&gt;" in items or "\\u202e" in items
    assert "<script>" not in md
    assert RLO not in md


def test_status_with_a_closed_pipe_exits_quietly(local_cloud: LocalCloud, tmp_path: Path) -> None:
    """`status | head -c 20`: the closed pipe is not an error (exit as the state says)."""
    local_cloud.populate(tenants=1, per_tenant=1)
    local_cloud.start()
    assert local_cloud.run("--progress", "none").returncode == 0

    class Closed:
        def write(self, _text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self) -> bool:
            return False

    from orchestrator.cli import main

    code = main(["status", str(local_cloud.list_path)], local_cloud.env(), Closed(), Closed())  # type: ignore[arg-type]
    assert code == 0
    del tmp_path
