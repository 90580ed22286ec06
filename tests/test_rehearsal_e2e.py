"""Rehearsal in two commands: `ims-migrate simulator` says how to point the tool at it.

The simulator runs as a process (as a user starts it); discover and run go through the CLI's
main in this process, over HTTP to it, with nothing but what the simulator printed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import main


@pytest.mark.e2e
def test_the_simulator_prints_what_a_rehearsal_needs(tmp_path: Path) -> None:
    """Started with --config-out, the simulator writes only that file, prints its accounts'
    key variables; with them, discover and run migrate its world with exit 0."""
    here = tmp_path / "cwd"
    here.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "simulator", "--config-out", "sim.toml"],
        cwd=here,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("# then:") for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(process.stdout.readline())
        env = dict(os.environ)
        for line in lines:
            if line.startswith("export "):
                name, value = line.removeprefix("export ").strip().split("=", 1)
                env[name] = value
        assert sorted(p.name for p in here.iterdir()) == ["sim.toml"]
        config = str(here / "sim.toml")
        work = tmp_path / "work"
        work.mkdir()
        listed = str(work / "rehearsal.csv")
        out, err = io.StringIO(), io.StringIO()
        found = main(
            ["discover", "--source-region", "cn-north-4", "--target-region", "cn-east-3",
             "--config", config, "--output", listed],
            env, out, err,
        )  # fmt: skip
        assert found == 0, err.getvalue()
        done = main(["run", listed, "--config", config, "--progress", "none"], env, out, err)
        assert done == 0, out.getvalue() + err.getvalue()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
