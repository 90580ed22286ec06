"""Broken output is not a bug: ``status`` and ``report`` to a full device say so in one line
(exit 74); to a closed pipe (``| head``) they end quietly with exit 0. Never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator.core.model import Item
from orchestrator.state.checkpoint import CheckpointStore
from tests.test_model import make_row

pytestmark = pytest.mark.e2e  # a real closed pipe and a full device need the CLI's own process

COMMANDS = [["status"], ["report"], ["report", "--format", "json"]]


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    """A list whose state dir holds 3,000 items: more output than a pipe's buffer."""
    path = tmp_path / "l.csv"
    path.write_text("image_id,source_region,target_region\n")
    store = CheckpointStore(tmp_path / "l.state")
    (tmp_path / "l.state").mkdir()
    store.open()
    anyio.run(store.commit, [Item(row=make_row(f"img-{n}")) for n in range(3000)])
    store.close()
    return path


def run(args: list[str], stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_output_to_a_full_device_is_one_line_and_exit_74(listed: Path, command: list[str]) -> None:
    """``> /dev/full``: exit 74, one line naming the problem."""
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        done = run([*command, str(listed)], fd)
    finally:
        os.close(fd)
    assert done.returncode == 74, done.stderr
    assert done.stderr.strip().splitlines() == [
        "ims-migrate: cannot write the output: No space left on device"
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_output_to_a_closed_pipe_ends_quietly(listed: Path, command: list[str]) -> None:
    """The reader went away (``| head -c 20``): exit 0, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = run([*command, str(listed)], write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
