"""scripts/bench: how close ims-migrate keeps to the cloud's floor, and what it costs.

Runs the real CLI (``python -m orchestrator run``) against the simulator
(``python -m orchestrator simulator``), each in its own process, on time-scaled workloads, and
prints a table (medians over the repetitions) and writes the same figures as JSON.

    scripts/bench [mixed|short|scale|preflight|many|all] [--quick] [--reps N] [--json FILE]
                  [--workdir DIR]

* ``mixed``: the adaptive strategy (the defaults) and a naive baseline (list order, a fixed
  poll every 10 cloud seconds, nothing learned) on the same workload, in the same run.
* ``short``: the same comparison on copies of only 12 to 80 x ``poll_min``, each at 0 % for
  its first 40 cloud seconds (INIT): 4 tenants x 80 images, time scale 1/100.
* ``scale``: 100,000 rows over 1,000 tenants whose copies end almost at once: peak memory,
  checkpoint cost, CPU per item, and the time from a resumed run's start to its first poll. The
  first run is stopped by SIGTERM half way: the seconds from the signal to ``run.stopping``, to
  ``run.finished`` and to the process's exit, and the copy requests the simulator received
  after the signal (``GET /_sim/requests?kind=copy&since=``). ``--rows N --tenants M``: another
  size (a quicker look before the 100,000-row figure); ``--stop-only``: the stop's figures alone
  (no resumed run).
* ``preflight``: 10,000 rows of one tenant from one region: how many requests preflight makes.
* ``many``: 20,000 rows over 400 tenants, copies of 1-2 s, request_timeout 5, a simulator that
  answers at once but throttles each key at 200/s (429 + Retry-After): copy requests per item,
  unknown outcomes, 429s, requests sent inside a Retry-After, CPU and memory; adaptive and
  baseline in the same run, the requests per item by kind, and the detection lag beside them
  (fewer polls that see each copy ended later are no saving). ``--tenants M --per-tenant N``:
  another size.

Not part of CI (it takes minutes); ``--quick`` is a smoke run of a minute or two.
``BENCH_PROFILE=1`` runs each ``ims-migrate run`` under cProfile (``<workdir>/<mode>/prof.out``;
its CPU figures are then the profiler's, not the tool's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import (
    copy_figures,
    detection_lags,
    last_event,
    median_of,
    read_events,
    recorded_detections,
    recorded_successes,
    stamp,
)
from bench_workload import (
    Built,
    Many,
    Mixed,
    Preflight,
    Scale,
    Short,
    Timing,
    build_many,
    build_mixed,
    build_preflight,
    build_scale,
    config_toml,
    run_arguments,
    scale_config,
    stop_process,
    write_inputs,
)

from orchestrator.simulator.truth import Truth

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# ``python -m cProfile -o`` writes its profile when the module returns, but a run ends with
# os._exit (orchestrator/fast_exit.py) after the exit handlers: the profile is dumped by one.
_PROFILED = (
    "import atexit, cProfile, runpy, sys\n"
    "profile = cProfile.Profile()\n"
    "atexit.register(profile.dump_stats, sys.argv.pop(1))\n"
    "profile.enable()\n"
    "runpy.run_module('orchestrator', run_name='__main__', alter_sys=True)\n"
)


def say(text: str = "") -> None:
    print(text, flush=True)  # noqa: T201 -- a script's output is its point


# -- processes --------------------------------------------------------------------------------


@dataclass
class Simulator:
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, scenario: Mapping[str, Any], timeout: float = 300.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "scenario.json"
        path.write_text(json.dumps(scenario), encoding="utf-8")
        port_file = self.folder / "sim.port"
        port_file.unlink(missing_ok=True)
        with (self.folder / "simulator.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own CLI, our own arguments
                [
                    PYTHON,
                    "-m",
                    "orchestrator",
                    "simulator",
                    "--scenario",
                    str(path),
                    "--port-file",
                    str(port_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self.folder,
            )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((self.folder / "simulator.log").read_text())
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def truth(self) -> Truth:
        url = f"http://127.0.0.1:{self.port}/_sim/truth"
        with urllib.request.urlopen(url, timeout=300) as response:
            return Truth.from_dict(json.loads(response.read()))

    def requests(self, kind: str, since: float) -> list[list[Any]]:
        """The requests of ``kind`` the simulator received from ``since`` (epoch) on."""
        url = f"http://127.0.0.1:{self.port}/_sim/requests?kind={kind}&since={since!r}"
        with urllib.request.urlopen(url, timeout=300) as response:
            found: list[list[Any]] = json.loads(response.read())["requests"]
            return found

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Finished:
    exit_code: int
    started: float  # epoch seconds, just before the process was started
    wall: float
    cpu: float  # user + system seconds of the CLI process
    ended: float = 0.0  # epoch seconds, when its exit was seen (within 20 ms)
    system: float = 0.0  # of ``cpu``, the seconds spent in the kernel (syscalls: sockets, fsync)


class Run:
    """One ``ims-migrate run`` in its own process; its CPU comes from wait4. (Not its memory:
    wait4's ru_maxrss also counts what this process held when it forked the run; the run
    reports its own peak, VmHWM, in its ``run.finished`` event.)"""

    def __init__(self, folder: Path, extra: Sequence[str], env: Mapping[str, str]) -> None:
        self.folder = folder
        args = [PYTHON, *run_arguments(folder, *extra)]
        if os.environ.get("BENCH_PROFILE"):  # the run under cProfile: <folder>/prof.out
            args[1:3] = ["-c", _PROFILED, str(folder / "prof.out")]
        self.started = time.time()
        self._clock = time.monotonic()
        env = dict(env)
        if os.environ.get("BENCH_TOOL_PYTHONPATH"):  # another checkout's tool, same simulator
            env["PYTHONPATH"] = os.environ["BENCH_TOOL_PYTHONPATH"]
        with (folder / "run.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own CLI, our own arguments
                args, env={**os.environ, **env}, stdout=log, stderr=log, cwd=folder
            )

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> Finished:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the run in {self.folder} did not finish in {timeout:g} s")
            time.sleep(0.02)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return Finished(
            exit_code=self.process.returncode,
            started=self.started,
            wall=time.monotonic() - self._clock,
            cpu=usage.ru_utime + usage.ru_stime,
            ended=time.time(),
            system=usage.ru_stime,
        )


# -- the mixed workload -------------------------------------------------------------------------

STRATEGIES = {
    "adaptive": {"order": "largest", "polling": "adaptive"},
    "baseline": {"order": "list", "polling": "fixed"},
}
MIXED_ROWS = [
    ("efficiency", "efficiency (floor / makespan, mean of tenants)", "{:.3f}"),
    ("efficiency_worst", "efficiency, worst tenant", "{:.3f}"),
    ("efficiency_run", "efficiency, whole run", "{:.3f}"),
    ("makespan", "makespan (wall s)", "{:.1f}"),
    ("polls_per_copy", "polls per copy", "{:.2f}"),
    ("requests_per_copy", "requests per copy (all kinds)", "{:.2f}"),
    ("lag_mean", "detection lag, mean (share of copy)", "{:.2%}"),
    ("lag_median", "detection lag, median", "{:.2%}"),
    ("lag_p95", "detection lag, p95", "{:.2%}"),
    ("lag_recorded_mean", "lag to the success recorded, mean", "{:.2%}"),
    ("tool_cpu", "tool CPU (s)", "{:.1f}"),
]


def run_mixed_once(work: Mixed, built: Built, strategy: str, folder: Path) -> dict[str, Any]:
    scale = work.time_scale
    timing = Timing.scaled(scale)
    if strategy == "baseline":
        timing = replace(timing, poll_min=work.baseline_poll_seconds * scale)
    sim = Simulator(folder)
    sim.start(built.scenario)
    try:
        config = config_toml(
            sim.port,
            built.scenario["accounts"],
            timing=timing,
            requests_per_second=work.requests_per_second / scale,
            **STRATEGIES[strategy],
        )
        env = write_inputs(folder, built, config)
        finished = Run(folder, [], env).wait(timeout=3600)
        truth = sim.truth()
    finally:
        sim.stop()
    (folder / "truth.json").write_text(json.dumps(truth.to_dict()), encoding="utf-8")
    events = read_events(folder / "migration.state" / "events.jsonl")
    figures = copy_figures(truth, recorded_successes(events), recorded_detections(events))
    figures.update(strategy=strategy, exit_code=finished.exit_code, tool_cpu=finished.cpu)
    figures["tool_wall"] = finished.wall
    return figures


def bench_copies(
    args: argparse.Namespace, root: Path, name: str, work: Mixed, goals: Mapping[str, float]
) -> dict[str, Any]:
    """A copy workload (``mixed`` or ``short``): each strategy ``reps`` times, the medians."""
    if args.quick:
        work = work.smaller(25)
    reps = args.reps or (1 if args.quick else 3)
    built = build_mixed(work)
    say(
        f"{name} workload: {len(built.rows)} images, {len(work.images_per_tenant)} tenants, "
        f"seed {work.seed}, {reps} repetition(s) of each strategy"
    )
    say("  " + json.dumps(work.describe(), sort_keys=True))
    runs: dict[str, list[dict[str, Any]]] = {strategy: [] for strategy in STRATEGIES}
    for rep in range(reps):
        for strategy in STRATEGIES:
            folder = root / f"{name}-{strategy}-{rep + 1}"
            shutil.rmtree(folder, ignore_errors=True)
            figures = run_mixed_once(work, built, strategy, folder)
            runs[strategy].append(figures)
            say(
                f"  rep {rep + 1} {strategy:<8}  exit {figures['exit_code']}  "
                f"efficiency {figures['efficiency']:.3f}  polls/copy "
                f"{figures['polls_per_copy']:.2f}  lag {figures['lag_mean']:.2%}  "
                f"makespan {figures['makespan']:.1f} s  duplicates {figures['duplicates']}  "
                f"max in flight {figures['max_in_flight']}"
            )
    medians = {
        strategy: {key: median_of(strategy_runs, key) for key, _, _ in MIXED_ROWS}
        for strategy, strategy_runs in runs.items()
    }
    ratios = {
        key: medians["adaptive"][key] / medians["baseline"][key]
        for key, _, _ in MIXED_ROWS
        if medians["baseline"][key]
    }
    say()
    say(
        f"{'median of ' + str(reps) + ' run(s)':<46} {'adaptive':>10} {'baseline':>10} {'ratio':>7}"
    )
    for key, label, form in MIXED_ROWS:
        ratio = f"{ratios[key]:.3f}" if key in ratios else "-"
        say(
            f"{label:<46} {form.format(medians['adaptive'][key]):>10} "
            f"{form.format(medians['baseline'][key]):>10} {ratio:>7}"
        )
    adaptive = medians["adaptive"]
    targets = {
        f"efficiency >= {goals['efficiency']:g}": adaptive["efficiency"] >= goals["efficiency"],
        "efficiency above the baseline's": adaptive["efficiency"]
        > medians["baseline"]["efficiency"],
        f"polls per copy <= {goals['polls']:g}": adaptive["polls_per_copy"] <= goals["polls"],
        f"detection lag <= {goals['lag']:.0%}": adaptive["lag_mean"] <= goals["lag"],
        "no duplicate, cap kept": all(
            r["duplicates"] == 0 and r["max_in_flight"] <= 5 for rs in runs.values() for r in rs
        ),
    }
    say("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    return {
        "workload": work.describe(),
        "repetitions": reps,
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
        "targets": targets,
    }


def bench_mixed(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    return bench_copies(args, root, "mixed", Mixed(), {"efficiency": 0.95, "polls": 8, "lag": 0.03})


def bench_short(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Copies of 12 to 80 x poll_min, 0 % at first: the adaptive strategy's hard case."""
    return bench_copies(args, root, "short", Short(), {"efficiency": 0.97, "polls": 8, "lag": 0.02})


# -- scale ---------------------------------------------------------------------------------------


def read_events_upto(path: Path, before: os.stat_result) -> list[dict[str, Any]]:
    """The events that were in ``path`` when ``before`` was taken (by size)."""
    with path.open("rb") as handle:
        head = handle.read(before.st_size)
    return [json.loads(line) for line in head.splitlines() if line.strip()]


def count_succeeded(path: Path, offset: int, seen: int) -> tuple[int, int]:
    """Succeeded events appended to ``path`` since ``offset``; (new offset, new count)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return offset, seen
    end = chunk.rfind(b"\n") + 1
    return offset + end, seen + chunk[:end].count(b'"event":"item.succeeded"')


def stop_figures(
    signalled: float, stopped: Finished, events: Sequence[Mapping[str, Any]], sim: Simulator
) -> dict[str, Any]:
    """How the SIGTERM at ``signalled`` (epoch) was obeyed: seconds to the run's stopping and
    finished events and to the process's exit, and the copy requests the simulator received
    after the signal and after the run said it was stopping (both must be 0)."""
    stopping = last_event(events, "run.stopping")
    finished = last_event(events, "run.finished")
    heard = stamp(stopping) if stopping else None
    posts = sim.requests("copy", signalled)
    return {
        "signal_to_stopping_seconds": heard - signalled if heard else None,
        "signal_to_finished_seconds": stamp(finished) - signalled if finished else None,
        "signal_to_exit_seconds": stopped.ended - signalled,
        "posts_after_signal": len(posts),
        "posts_after_stopping": sum(1 for r in posts if heard is not None and r[0] >= heard),
        "posts_after_signal_at": [round(r[0] - signalled, 3) for r in posts[:20]],
        "stop_journal_lines": sum(
            1
            for e in events
            if heard is not None
            and str(e.get("event", "")).startswith("item.")
            and stamp(e) >= heard
        ),
    }


def first_poll_text(seconds: float | None) -> str:
    """A resume's seconds to its first answered poll, if it had one (a resume that finds no
    copy in flight polls none: its first work is the checks after the copies)."""
    return "no poll answered" if seconds is None else f"{seconds:.2f}"


def bench_scale(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = Scale()
    if args.quick:
        work = replace(work, rows=10_000, tenants=100)
    if args.rows:
        work = replace(work, rows=args.rows, tenants=args.tenants or work.tenants)
    say(
        f"scale: {work.rows} rows over {work.tenants} tenants, copies of "
        f"{work.copy_seconds:g} s; {json.dumps(work.describe(), sort_keys=True)}"
    )
    built = build_scale(work)
    folder = root / "scale"
    shutil.rmtree(folder, ignore_errors=True)
    sim = Simulator(folder)
    loading = time.monotonic()
    sim.start(built.scenario, timeout=900)
    say(f"  simulator up with {work.rows} images in {time.monotonic() - loading:.1f} s")
    config = scale_config(sim.port, built.scenario["accounts"], work)
    env = write_inputs(folder, built, config)
    events_path = folder / "migration.state" / "events.jsonl"
    try:
        # 1. A run stopped (SIGTERM) once half of the items are done, copies in flight.
        first = Run(folder, [], env)
        offset = done = 0
        while done < work.rows // 2 and first.process.poll() is None:
            time.sleep(0.5)
            offset, done = count_succeeded(events_path, offset, done)
        signalled = time.time()
        first.signal(signal.SIGTERM)
        stopped = first.wait(timeout=600)
        truth_mid = sim.truth()
        events = read_events(events_path)
        first_end = last_event(events, "run.finished") or {}
        stop = stop_figures(signalled, stopped, events, sim)
        say(
            f"  first run stopped by SIGTERM after {stopped.wall:.1f} s with {done} done: "
            f"exit {stopped.exit_code}, peak RSS {first_end.get('peak_rss_mib')} MiB, "
            f"CPU {stopped.cpu:.1f} s"
        )
        say(f"  the stop: {json.dumps(stop, sort_keys=True)}")
        if args.stop_only:  # the stop's figures only: no resumed run
            return {"workload": work.describe(), "figures": stop}
        # 2. The resumed run, to the end. (It may rotate events.jsonl as it starts.)
        before = events_path.stat()
        resumed = Run(folder, [], env)
        finished = resumed.wait(timeout=3600)
        truth = sim.truth()
    finally:
        sim.stop()
    events = read_events(events_path)
    rotated = events_path.stat().st_ino != before.st_ino
    resume_events = events if rotated else events[len(read_events_upto(events_path, before)) :]
    end = last_event(resume_events, "run.finished") or {}
    preflight_lists = truth.requests.get("list", 0) - truth_mid.requests.get("list", 0)
    items_after = sum(1 for e in resume_events if e.get("event") == "item.succeeded")
    first_poll = end.get("first_poll_at")
    runs = [(stopped, first_end), (finished, end)]
    cpu = sum(f.cpu for f, _ in runs)
    wall = sum(f.wall for f, _ in runs)
    checkpoint_cpu = sum(float(e.get("checkpoint_cpu_seconds", 0)) for _, e in runs)
    checkpoint_wall = sum(float(e.get("checkpoint_write_seconds", 0)) for _, e in runs)
    state = folder / "migration.state"
    figures = {
        "rows": work.rows,
        "tenants": work.tenants,
        "exit_codes": [stopped.exit_code, finished.exit_code],
        "succeeded": truth.jobs.get("SUCCESS", 0),
        "copies": truth.copies_total,
        "duplicates": len(truth.duplicates),
        "max_in_flight": max(truth.max_in_flight.values() or [0]),
        "peak_rss_mib": max(float(e.get("peak_rss_mib", 0)) for _, e in runs),
        "tool_cpu_seconds": cpu,
        "tool_wall_seconds": wall,
        "cpu_ms_per_item": 1000 * cpu / work.rows,
        "checkpoint_cpu_seconds": checkpoint_cpu,
        "checkpoint_write_seconds": checkpoint_wall,
        "checkpoint_share_of_cpu": checkpoint_cpu / cpu,
        "checkpoint_share_of_wall": checkpoint_wall / wall,
        "fsyncs": sum(int(e.get("checkpoint_fsyncs", 0)) for _, e in runs),
        "compactions": sum(int(e.get("checkpoint_compactions", 0)) for _, e in runs),
        "snapshot_mib": (state / "checkpoint.json").stat().st_size / 2**20,
        "resume_to_first_poll_seconds": (first_poll - finished.started) if first_poll else None,
        "resume_cpu_to_first_poll_seconds": end.get("first_poll_cpu_seconds"),
        "resume_list_requests": preflight_lists,
        "resume_items_finished": items_after,
        "requests_per_item": sum(truth.requests.values()) / work.rows,
        "polls_per_item": truth.requests.get("job", 0) / work.rows,
        "items_per_second": work.rows / wall,
        **stop,
    }
    say()

    def seconds(key: str) -> str:
        value = figures[key]
        return "-" if value is None else f"{value:.2f}"

    rows = [
        ("stop: SIGTERM to the process's exit (s)", seconds("signal_to_exit_seconds"), "<= 5"),
        ("stop: SIGTERM to run.finished (s)", seconds("signal_to_finished_seconds"), ""),
        ("stop: SIGTERM to run.stopping (s)", seconds("signal_to_stopping_seconds"), ""),
        (
            "stop: copy POSTs received after the SIGTERM",
            f"{figures['posts_after_signal']} (after run.stopping: "
            f"{figures['posts_after_stopping']})",
            "0",
        ),
        ("stop: item events logged after run.stopping", str(figures["stop_journal_lines"]), ""),
        (
            "exit codes: stopped run, resumed run",
            f"{stopped.exit_code}, {finished.exit_code}",
            "75, 0",
        ),
        ("peak RSS of the tool (MiB)", f"{figures['peak_rss_mib']:.0f}", "<= 500"),
        ("tool CPU (s), both runs", f"{cpu:.1f}", ""),
        ("tool wall (s), both runs", f"{wall:.1f}", ""),
        ("CPU per item (ms)", f"{figures['cpu_ms_per_item']:.2f}", ""),
        ("checkpoint CPU / tool CPU", f"{figures['checkpoint_share_of_cpu']:.1%}", "<= 10%"),
        ("checkpoint writing / tool wall", f"{figures['checkpoint_share_of_wall']:.1%}", "<= 10%"),
        ("fsyncs / compactions", f"{figures['fsyncs']} / {figures['compactions']}", ""),
        ("snapshot size (MiB)", f"{figures['snapshot_mib']:.1f}", ""),
        (
            "resume: start to first poll (s)",
            first_poll_text(figures["resume_to_first_poll_seconds"]),
            "<= 5",
        ),
        (
            "resume: its CPU seconds by then",
            first_poll_text(figures["resume_cpu_to_first_poll_seconds"]),
            "(the wall time counts the machine's load)",
        ),
        (
            "resume: list requests (preflight + checks)",
            str(preflight_lists),
            f"~ {items_after} (one per finished copy)",
        ),
        (
            "requests per item / polls per item",
            f"{figures['requests_per_item']:.2f} / {figures['polls_per_item']:.2f}",
            "",
        ),
        ("items per second", f"{figures['items_per_second']:.0f}", ""),
        (
            "duplicates / max in flight",
            f"{figures['duplicates']} / {figures['max_in_flight']}",
            "0 / <= 5",
        ),
    ]
    for label, value, target in rows:
        say(f"{label:<44} {value:>14}  {target}")
    return {"workload": work.describe(), "figures": figures}


# -- many tenants, short copies, a throttling gateway --------------------------------------------

MANY_ROWS = [
    ("wall", "wall (s)", "{:.1f}"),
    ("cpu", "tool CPU (s)", "{:.1f}"),
    ("cpu_ms_per_item", "CPU per item (ms)", "{:.2f}"),
    ("system_ms_per_item", "  of it in the kernel (ms)", "{:.2f}"),
    ("peak_rss_mib", "peak RSS (MiB)", "{:.0f}"),
    ("copy_requests_per_item", "copy requests received per item", "{:.2f}"),
    ("accepted_per_item", "copies accepted per item", "{:.2f}"),
    ("submissions_logged_per_item", "copy submissions logged per item", "{:.2f}"),
    ("unknown_outcomes", "unknown outcomes (reconciliations)", "{:.0f}"),
    ("throttled", "429s received", "{:.0f}"),
    ("inside_retry_after", "requests inside a Retry-After", "{:.0f}"),
    ("requests_per_item", "requests per item", "{:.2f}"),
    ("lag_median", "detection lag, median (share of copy)", "{:.1%}"),
    ("lag_mean", "detection lag, mean", "{:.1%}"),
    ("succeeded", "copies succeeded", "{:.0f}"),
]


def run_many_once(
    work: Many, built: Built, strategy: str, folder: Path, deadline: str | None = None
) -> dict[str, Any]:
    timing = Timing(
        poll_min=0.2,
        poll_max=2.0,
        settle=60.0,
        backoff_max=2.0,
        request_timeout=work.request_timeout,
        job_deadline=600.0,
    )
    sim = Simulator(folder)
    sim.start(built.scenario, timeout=900)
    try:
        config = config_toml(
            sim.port,
            built.scenario["accounts"],
            timing=timing,
            requests_per_second=50.0,  # the default, per key and host
            **STRATEGIES[strategy],
        )
        env = write_inputs(folder, built, config)
        extra = ["--deadline", deadline] if deadline else []
        finished = Run(folder, extra, env).wait(timeout=3600)
        truth = sim.truth()
    finally:
        sim.stop()
    events = read_events(folder / "migration.state" / "events.jsonl")
    end = last_event(events, "run.finished") or {}
    rows = work.rows
    # The polls per item trade with how soon each copy is seen ended: both are shown.
    lags = detection_lags(truth, recorded_detections(events)) or [0.0]
    return {
        "strategy": strategy,
        "exit_code": finished.exit_code,
        "wall": finished.wall,
        "cpu": finished.cpu,
        "cpu_ms_per_item": 1000 * finished.cpu / rows,
        "system_ms_per_item": 1000 * finished.system / rows,
        "peak_rss_mib": float(end.get("peak_rss_mib", 0) or 0),
        "copy_requests_per_item": truth.requests.get("copy", 0) / rows,
        "accepted_per_item": sum(truth.submissions.values()) / rows,
        "submissions_logged_per_item": sum(1 for e in events if e.get("event") == "item.submitting")
        / rows,
        "unknown_outcomes": sum(
            1 for e in events if str(e.get("detail") or "").startswith("reconciling")
        ),
        "throttled": sum(counts.get("429", 0) for counts in truth.responses.values()),
        "inside_retry_after": truth.inside_retry_after,
        "requests_per_item": sum(truth.requests.values()) / rows,
        "requests_per_item_by_kind": {
            kind: count / rows for kind, count in sorted(truth.requests.items())
        },
        "lag_median": statistics.median(lags),
        "lag_mean": statistics.fmean(lags),
        "succeeded": truth.jobs.get("SUCCESS", 0),
        "duplicates": len(truth.duplicates),
    }


def bench_many(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = Many()
    if args.quick:
        work = replace(work, tenants=40, per_tenant=10)
    if args.tenants or args.per_tenant:
        tenants, per_tenant = args.tenants or work.tenants, args.per_tenant or work.per_tenant
        work = replace(work, tenants=tenants, per_tenant=per_tenant)
    built = build_many(work)
    say(f"many: {work.rows} rows, {json.dumps(work.describe(), sort_keys=True)}")
    runs = {}
    for strategy in args.strategies.split(","):
        folder = root / f"many-{strategy}"
        shutil.rmtree(folder, ignore_errors=True)
        runs[strategy] = run_many_once(work, built, strategy, folder, args.deadline)
        say(
            f"  {strategy}: exit {runs[strategy]['exit_code']}, wall {runs[strategy]['wall']:.1f} s"
        )
    say()
    say(f"{'one run each':<40} " + " ".join(f"{name:>10}" for name in runs))
    for key, label, form in MANY_ROWS:
        say(f"{label:<40} " + " ".join(f"{form.format(r[key]):>10}" for r in runs.values()))
    kinds = sorted({kind for r in runs.values() for kind in r["requests_per_item_by_kind"]})
    for kind in kinds:  # what the requests per item are made of (the simulator's counts)
        say(
            f"{'  ' + kind + ' requests per item':<40} "
            + " ".join(
                f"{r['requests_per_item_by_kind'].get(kind, 0.0):>10.2f}" for r in runs.values()
            )
        )
    best = next(iter(runs.values()))
    targets = {
        "copy requests per item 1.00": round(best["copy_requests_per_item"], 2) == 1.0,
        "unknown outcomes 0": best["unknown_outcomes"] == 0,
        "requests inside a Retry-After 0": best["inside_retry_after"] == 0,
        "CPU per item <= 1.5 ms": best["cpu_ms_per_item"] <= 1.5,
        "peak RSS <= 150 MiB": best["peak_rss_mib"] <= 150,
    }
    say("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    return {"workload": work.describe(), "runs": runs, "targets": targets}


# -- preflight -----------------------------------------------------------------------------------


def bench_preflight(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = Preflight()
    built = build_preflight(work)
    folder = root / "preflight"
    shutil.rmtree(folder, ignore_errors=True)
    sim = Simulator(folder)
    sim.start(built.scenario)
    try:
        timing = Timing(
            poll_min=0.05, poll_max=1, settle=5, backoff_max=1, request_timeout=60, job_deadline=600
        )
        config = config_toml(
            sim.port, built.scenario["accounts"], timing=timing, requests_per_second=1000
        )
        env = write_inputs(folder, built, config)
        finished = Run(folder, [], env).wait(timeout=600)
        truth = sim.truth()
    finally:
        sim.stop()
    requests = dict(truth.requests)
    figures = {
        "rows": work.rows,
        "exit_code": finished.exit_code,
        "requests": requests,
        "preflight_requests": requests.get("list", 0) + requests.get("iam", 0),
        "wall_seconds": finished.wall,
    }
    say(
        f"preflight: {work.rows} rows of one tenant, one source and one target region "
        f"(the target's quota is full, so the run stops at its first copy)"
    )
    say(f"  requests by kind: {json.dumps(requests, sort_keys=True)}")
    say(
        f"  preflight requests (list + iam): {figures['preflight_requests']}  (target: tens)  "
        f"run wall {finished.wall:.1f} s, exit {finished.exit_code}"
    )
    return {"workload": work.describe(), "figures": figures}


# -- main ----------------------------------------------------------------------------------------


@dataclass
class Report:
    started: str
    machine: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "what",
        nargs="?",
        default="mixed",
        choices=("mixed", "short", "scale", "preflight", "many", "all"),
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument("--rows", type=int, default=0, help="scale: rows (default 100,000)")
    parser.add_argument(
        "--tenants", type=int, default=0, help="scale: tenants (with --rows); many: tenants"
    )
    parser.add_argument("--per-tenant", type=int, default=0, help="many: rows per tenant")
    parser.add_argument(
        "--stop-only", action="store_true", help="scale: the stopped run only (no resumed run)"
    )
    parser.add_argument("--reps", type=int, default=0, help="repetitions (mixed, short; default 3)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-output")
    parser.add_argument(
        "--deadline", default=None, help="many: the runs' --deadline (a bounded comparison)"
    )
    parser.add_argument(
        "--strategies", default="adaptive,baseline", help="many: which strategies, in order"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where the figures go (default: WORKDIR/bench-WHAT.json)",
    )
    args = parser.parse_args(argv)
    root: Path = args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    report = Report(
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine={
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "quick": args.quick,
        },
    )
    chosen = ("mixed", "short", "scale", "preflight") if args.what == "all" else (args.what,)
    benches = {
        "mixed": bench_mixed,
        "short": bench_short,
        "scale": bench_scale,
        "preflight": bench_preflight,
        "many": bench_many,
    }
    for name in chosen:
        began = time.monotonic()
        report.results[name] = benches[name](args, root)
        report.results[name]["bench_seconds"] = time.monotonic() - began
        say()
    out = args.json or root / f"bench-{args.what}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(asdict(report), indent=1, default=str) + "\n", encoding="utf-8")
    say(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
