"""scripts/bench resume: the time from a resumed run's start to its first answered poll, measured
again and again on one stopped state, against the same cloud each time.

    scripts/bench resume make [--rows N --tenants M] [--copy-seconds S]
    scripts/bench resume measure [--tool PATH]... [--reps N]

``make``: the scale workload (``bench_workload.Scale``: 100,000 rows over 1,000 tenants) with
copies of ``--copy-seconds`` (default 3 s, so that copies are in flight whenever the run is
stopped: with copies of 0.02 s the run makes every copy long before half the items have
succeeded, and its resume has nothing to poll), run by this checkout's tool (or
``--maker-tool PATH``) and stopped by SIGTERM once ``--stop-copied`` (default half) of the
copies are made (``item.verifying``: the checks after a copy wait behind the copies, so a run
stopped once half of its items have *succeeded* has made nearly every copy). The
stopped state dir and the simulator's world at that moment (``bench_simworld.py``) are kept in
``WORKDIR/resume/saved``, with what the state holds (phases, copies in flight, the snapshot's
and the journal's sizes).

``measure``: for each repetition, for each ``--tool`` in turn (a checkout's folder, put first
on the run's PYTHONPATH as ``BENCH_TOOL_PYTHONPATH`` does; default: this checkout): the saved
state dir copied back in place, a simulator serving the saved world (its clock going on from
the stop), the resumed run started, stopped by SIGTERM as soon as its first poll is answered
(``run.first_poll`` in events.jsonl), and its ``run.finished`` read: start to first poll (from
just before the process was started, so the interpreter's start and the imports count), the
CPU by then, the load's seconds (``run.loaded``) and the peak RSS. A resume that finds no copy
in flight, or is not stopped in time, is reported as such, never as a figure.

A benchmark, not part of CI. Run it under the bench lock.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workload import (
    Scale,
    build_scale,
    run_arguments,
    scale_config,
    stop_process,
    write_inputs,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STATE = "migration.state"


def say(text: str = "") -> None:
    print(text, flush=True)  # noqa: T201 -- a script's output is its point


class SimWorld:
    """``bench_simworld.py`` in its own process, on a fixed port (the config names it)."""

    def __init__(self, folder: Path, port: int, world: Path | None) -> None:
        port_file = folder / "sim.port"
        port_file.unlink(missing_ok=True)
        args = [
            PYTHON,
            str(ROOT / "scripts" / "bench_simworld.py"),
            "--scenario",
            str(folder / "scenario.json"),
            "--port-file",
            str(port_file),
            "--port",
            str(port),
        ]
        if world is not None:
            args += ["--world", str(world)]
        with (folder / "simulator.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own script
                args, stdout=subprocess.DEVNULL, stderr=log, cwd=folder
            )
        deadline = time.monotonic() + 900
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((folder / "simulator.log").read_text())
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def post(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            return json.loads(response.read())

    def stop(self) -> None:
        stop_process(self.process)


def start_run(folder: Path, env: dict[str, str], tool: Path | None) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env}
    environ.pop("BENCH_TOOL_PYTHONPATH", None)
    if tool is not None:
        environ["PYTHONPATH"] = str(tool)
    args = [PYTHON, *run_arguments(folder)]
    with (folder / "run.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 -- our own CLI
            args, env=environ, stdout=log, stderr=log, cwd=folder
        )


class Events:
    """The events appended to a state dir's events.jsonl from now on (a run rotates the file
    as it starts when it is large: the new file is then read from its start)."""

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = path
        self.inode = path.stat().st_ino if path.exists() else 0
        self.offset = 0 if from_start or not self.inode else path.stat().st_size

    def new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                if inode != self.inode:
                    self.inode, self.offset = inode, 0
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]


def state_figures(state: Path) -> dict[str, Any]:
    """What a stopped state holds: its items by phase (the journal applied), its files' sizes."""
    from orchestrator.state.checkpoint import read_snapshot

    snap = read_snapshot(state)
    assert snap is not None  # noqa: S101
    phases = Counter(str(item["phase"]) for item in snap["items"].values())
    journal = state / "journal.jsonl"
    return {
        "items": len(snap["items"]),
        "phases": dict(sorted(phases.items())),
        "in_flight": sum(phases.get(p, 0) for p in ("submitting", "running", "adopted")),
        "snapshot_mib": round((state / "checkpoint.json").stat().st_size / 2**20, 1),
        "journal_mib": round(journal.stat().st_size / 2**20, 1) if journal.exists() else 0,
        "journal_lines": journal.read_bytes().count(b"\n") if journal.exists() else 0,
    }


def make(args: argparse.Namespace, root: Path) -> None:
    work = Scale(copy_seconds=args.copy_seconds)
    if args.rows:
        work = replace(work, rows=args.rows, tenants=args.tenants or work.tenants)
    built = build_scale(work)
    shutil.rmtree(root, ignore_errors=True)
    run, saved = root / "run", root / "saved"
    run.mkdir(parents=True)
    saved.mkdir()
    (run / "scenario.json").write_text(json.dumps(built.scenario), encoding="utf-8")
    say(f"resume make: {json.dumps(work.__dict__)}")
    sim = SimWorld(run, 0, None)
    config = scale_config(sim.port, built.scenario["accounts"], work)
    env = write_inputs(run, built, config)
    try:
        began = time.monotonic()
        first = start_run(run, env, args.maker_tool)
        events = Events(run / STATE / "events.jsonl", from_start=True)
        copied = 0
        while copied < work.rows * args.stop_copied and first.poll() is None:
            time.sleep(0.5)
            copied += sum(1 for e in events.new() if e.get("event") == "item.verifying")
        first.send_signal(signal.SIGTERM)
        code = first.wait(600)
        took = time.monotonic() - began
        say(f"  first run stopped after {took:.1f} s, {copied} copied, exit {code}")
        saved_at = sim.post(f"/_bench/save?path={saved / 'world.pickle'}")
        say(f"  world saved at {saved_at['now']:.3f}")
    finally:
        sim.stop()
    shutil.copytree(run / STATE, saved / STATE)
    for name in ("scenario.json", "migration.csv", "ims-migrate.toml"):
        shutil.copy2(run / name, saved / name)
    meta = {
        "port": sim.port,
        "env": env,
        "work": work.__dict__,
        "state": state_figures(run / STATE),
    }
    (saved / "saved.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    say(f"  the stopped state: {json.dumps(meta['state'])}")


def measure_once(root: Path, meta: dict[str, Any], tool: Path | None) -> dict[str, Any]:
    run, saved = root / "run", root / "saved"
    shutil.rmtree(run / STATE, ignore_errors=True)
    shutil.copytree(saved / STATE, run / STATE)
    for name in ("scenario.json", "migration.csv", "ims-migrate.toml"):
        shutil.copy2(saved / name, run / name)
    subprocess.run(["sync"], check=True)  # noqa: S607 -- the copy's writes out of the way
    sim = SimWorld(run, meta["port"], saved / "world.pickle")
    events = Events(run / STATE / "events.jsonl")
    try:
        started = time.time()
        process = start_run(run, meta["env"], tool)
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            for event in events.new():
                seen.setdefault(str(event.get("event")), event)
            if "run.first_poll" in seen:
                break
            time.sleep(0.01)
        polled = "run.first_poll" in seen
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
        for event in events.new():
            seen.setdefault(str(event.get("event")), event)
    finally:
        sim.stop()
    end = seen.get("run.finished", {})
    loaded = seen.get("run.loaded", {})
    first = end.get("first_poll_at")
    loaded_at = _stamp(loaded.get("timestamp"))
    return {
        "tool": str(tool or ROOT),
        "exit": code,
        "first_poll_seen": polled,
        "start_to_first_poll": round(first - started, 3) if first else None,
        "cpu_to_first_poll": end.get("first_poll_cpu_seconds"),
        "load_seconds": loaded.get("seconds"),
        # start to the load's start (the interpreter, the imports, the config), and the load's
        # end to the first poll (the passes over the items, the clients, the probes)
        "before_load": _part(started, loaded_at, -(loaded.get("seconds") or 0)),
        "after_load": _part(loaded_at, first, 0),
        "peak_rss_mib": end.get("peak_rss_mib"),
    }


def _stamp(text: Any) -> float | None:
    """An event's ``timestamp`` (``2026-01-02T03:04:05.678901Z``) as Unix seconds."""
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _part(start: float | None, end: float | None, less: float) -> float | None:
    return round(end - start + less, 3) if start is not None and end is not None else None


def without_bytecode(checkout: Path) -> list[str]:
    """The tool's modules (a run's: not the simulator's) whose ``.pyc`` is missing or older than
    their source: an interpreter started with PYTHONDONTWRITEBYTECODE compiles them again at
    every start, which a resume's start to first poll counts (tenths of a second)."""
    stale = []
    for source in sorted((checkout / "orchestrator").rglob("*.py")):
        if source.name == "__main__.py" or "simulator" in source.parts:
            continue  # run as a script (never cached); not imported by a run
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
        except OSError:
            stale.append(str(source.relative_to(checkout)))
            continue
        stat = source.stat()
        kept = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
        if kept != (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF):
            stale.append(str(source.relative_to(checkout)))
    return stale


def measure(args: argparse.Namespace, root: Path) -> None:
    meta = json.loads((root / "saved" / "saved.json").read_text(encoding="utf-8"))
    say(f"resume measure: the stopped state {json.dumps(meta['state'])}")
    tools: list[Path | None] = list(args.tool) or [None]
    for tool in tools:
        stale = without_bytecode(tool or ROOT)
        if stale:  # said, not fixed: the checkout is not this script's to write
            say(
                f"  {tool or ROOT}: {len(stale)} module(s) without current bytecode "
                f"({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}): compiled at "
                f"every start (python -m compileall -q {tool or ROOT}/orchestrator)"
            )
    results: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for tool in tools:
            figures = measure_once(root, meta, tool)
            results.append(figures)
            say(f"  {rep + 1}: {json.dumps(figures)}")
    say()
    for tool in tools:
        mine = [r for r in results if r["tool"] == str(tool or ROOT)]
        times = [r["start_to_first_poll"] for r in mine if r["start_to_first_poll"] is not None]
        cpus = [r["cpu_to_first_poll"] for r in mine if r["cpu_to_first_poll"] is not None]
        loads = [r["load_seconds"] for r in mine if r["load_seconds"] is not None]
        rss = [r["peak_rss_mib"] for r in mine if r["peak_rss_mib"] is not None]
        before = [r["before_load"] for r in mine if r.get("before_load") is not None]
        after = [r["after_load"] for r in mine if r.get("after_load") is not None]
        say(
            f"{tool or ROOT}: start to first poll "
            f"{' / '.join(f'{t:.2f}' for t in times)} s (median "
            f"{statistics.median(times) if times else float('nan'):.2f}); CPU by then "
            f"{' / '.join(f'{c:.2f}' for c in cpus)} s; load "
            f"{' / '.join(f'{x:.2f}' for x in loads)} s (before it "
            f"{' / '.join(f'{x:.2f}' for x in before)} s, after it "
            f"{' / '.join(f'{x:.2f}' for x in after)} s); peak RSS "
            f"{' / '.join(f'{x:.0f}' for x in rss)} MiB; "
            f"{sum(1 for r in mine if not r['first_poll_seen'])} without a first poll"
        )
    out = root / f"measure-{time.strftime('%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    say(f"figures written to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench resume")
    parser.add_argument("step", choices=("make", "measure"))
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--tenants", type=int, default=0)
    parser.add_argument("--copy-seconds", type=float, default=3.0)
    parser.add_argument("--stop-copied", type=float, default=0.5, help="make: stop at this share")
    parser.add_argument("--maker-tool", type=Path, default=None)
    parser.add_argument("--tool", type=Path, action="append", default=[])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-output")
    args = parser.parse_args(argv)
    root = args.workdir.resolve() / "resume"
    if args.step == "make":
        make(args, root)
    else:
        measure(args, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
