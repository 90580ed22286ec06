"""One atomic file write: whole or not at all, durable when asked."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.state.atomic import write_atomic


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_the_file_is_replaced_whole_and_no_temp_file_is_left(tmp_path: Path) -> None:
    """Text, bytes or parts: the target holds exactly them, alone in its folder."""
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    for data in ("é\n", "é\n".encode(), iter([b"\xc3", b"\xa9\n"])):
        write_atomic(path, data, durable=False)
        assert path.read_bytes() == "é\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    """An error while writing the parts: the old version stays, the temp file is removed."""
    path = tmp_path / "out.txt"
    path.write_text("old\n")

    def parts() -> Iterator[bytes]:
        yield b"half"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, parts(), durable=True)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_durable_fsyncs_the_file_and_then_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fsyncs when durable (file, folder), none otherwise."""
    calls = count_fsyncs(monkeypatch)
    write_atomic(tmp_path / "a", "x", durable=False)
    assert calls == []
    write_atomic(tmp_path / "b", "x", durable=True)
    assert len(calls) == 2


def test_a_failing_fsync_is_raised_and_the_target_is_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's fsync fails: the OSError reaches the caller before any rename."""
    path = tmp_path / "out.txt"
    path.write_text("old\n")

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(path, "new\n", durable=True)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_temp_file_is_named_by_the_caller(tmp_path: Path) -> None:
    """The temp file, seen while it is written, carries the prefix its owner sweeps by."""
    seen: list[str] = []

    def parts() -> Iterator[bytes]:
        seen.extend(p.name for p in tmp_path.iterdir())
        yield b"x"

    write_atomic(tmp_path / "report.csv", parts(), durable=False, prefix=".report-", suffix=".t")
    [temp] = seen
    assert temp.startswith(".report-")
    assert temp.endswith(".t")


def test_the_mode_survives_the_rename(tmp_path: Path) -> None:
    """A mode given is the target's; without one it is mkstemp's 0600."""
    path = tmp_path / "m.prom"
    write_atomic(path, "x", durable=False, mode=0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomic(path, "y", durable=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
