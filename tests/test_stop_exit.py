"""The end of an ``ims-migrate run`` process: everything said and saved, then an exit without the
interpreter's teardown (freeing a 100,000-item heap object by object took seconds of a stop).

The run is started as ``python -m orchestrator run`` would start it, with an audit hook that
writes a line to a file when the interpreter finalizes (tears its state down). Judged on files
and the simulator's record: the exit code, that line (absent), the terminal's last lines in a
file (nothing lost with the buffers), events.jsonl, report.csv, the checkpoint, the stop's
profile, and the copies made.
"""

from __future__ import annotations

import csv
import json
import pstats
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator.crash_harness import copy_posts, judge_finished
from orchestrator.simulator.harness import Cloud
from orchestrator.state.checkpoint import read_snapshot

pytestmark = pytest.mark.e2e

TENANTS, PER_TENANT = 2, 20

# ``python -m orchestrator ARGS``, plus a hook that notes the interpreter's finalization in the
# file TEARDOWN_MARK (opened first: ``open`` no longer works while the interpreter finalizes).
RUN = """
import os, sys
fd = os.open(os.environ["TEARDOWN_MARK"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
FINALIZING = ("cpython.PyInterpreterState_Clear", "cpython._PySys_ClearAuditHooks")
def hook(event, args, write=os.write, fd=fd):
    if event in FINALIZING:
        write(fd, (event + "\\n").encode())
sys.addaudithook(hook)
from orchestrator.__main__ import main
main()
"""


def start(cloud: Cloud, name: str, **env: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The run in the background: its stdout and stderr go to files (block-buffered, as a pipe
    to cron's mail is), the finalization mark to a third."""
    out, mark = cloud.root / f"{name}.out", cloud.root / f"{name}.teardown"
    args = [sys.executable, "-c", RUN, *cloud.run_args()[3:]]  # "run LIST --config FILE"
    with out.open("wb") as stdout, (cloud.root / f"{name}.err").open("wb") as stderr:
        process = subprocess.Popen(
            args, env=cloud.env(TEARDOWN_MARK=str(mark), **env), stdout=stdout, stderr=stderr
        )
    return process, out, mark


def events(state_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state_dir / "events.jsonl").read_text().splitlines()]


def wait_for_posts(cloud: Cloud, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while len(copy_posts(cloud)) < count:
        assert process.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline, "no copy requests"
        time.sleep(0.02)


def said(out: Path, code: int, state_dir: Path) -> None:
    """The terminal's closing lines are all there, the last one last."""
    lines = out.read_text().splitlines()
    assert any(line.startswith(f"exit {code}: ") for line in lines), lines[-5:]
    assert lines[-1] == f"report: {state_dir / 'report.csv'}", lines[-5:]


@pytest.mark.timeout(300)
def test_a_run_exits_without_tearing_down_its_heap_having_said_and_saved_all(
    cloud: Cloud,
) -> None:
    cloud.params.update(seconds_per_gib=0.02, fixed_seconds=0.2, init_seconds=0.05)
    cloud.timing.update(settle=0.5)
    cloud.populate(tenants=TENANTS, per_tenant=PER_TENANT)
    cloud.start()
    state_dir = cloud.state_dir
    profile = cloud.root / "stop.prof"

    # 1. Stopped by SIGTERM among its copies: exit 75.
    run, out, mark = start(cloud, "stopped", IMS_MIGRATE_PROFILE_STOP=str(profile))
    wait_for_posts(cloud, 3, run)
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 75, (cloud.root / "stopped.err").read_text()
    posts = len(copy_posts(cloud))
    assert mark.read_text() == "", "the interpreter tore its heap down"
    said(out, 75, state_dir)
    written = events(state_dir)
    stop = next(n for n, e in enumerate(written) if e["event"] == "run.stopping")
    assert written[-1]["event"] == "run.finished"
    assert written[-1]["exit_code"] == 75
    intents = Counter(e["item"] for e in written[:stop] if e["event"] == "item.submitting")
    assert posts <= sum(intents.values()), "a copy request after the stop"
    snap = read_snapshot(state_dir)
    assert snap is not None
    assert snap["meta"]["last_exit"] == 75
    with (state_dir / "report.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == TENANTS * PER_TENANT
    assert pstats.Stats(str(profile)).get_stats_profile().func_profiles  # the exit handlers ran

    # 2. Resumed to the end: exit 0, the same way out.
    run, out, mark = start(cloud, "resumed")
    assert run.wait(120) == 0, (cloud.root / "resumed.err").read_text()
    assert mark.read_text() == "", "the interpreter tore its heap down"
    said(out, 0, state_dir)
    assert events(state_dir)[-1]["exit_code"] == 0
    judge_finished(cloud, TENANTS * PER_TENANT)
