"""Crash-safety harness: judges for what a killed run leaves on disk, and a fault-injecting CLI.

The crash tests and ``scripts/soak`` run the real CLI against the simulator (``harness.Cloud``)
and judge on two sources of truth: the simulator's (``/_sim/truth``: submissions, duplicates,
peak copies in flight; ``/_sim/requests``: every request with its arrival time) and the state
dir the killed process left behind, read here exactly as the next run would read it (snapshot,
then the journal lines of its generation).

(Over 400 lines: the judges and the fault-injecting CLI share the state-file readers; split only
with them.)

Run as a module, this file *is* the CLI (``python -m orchestrator.simulator.crash_harness run
LIST ...``) with faults switched on by environment variables, all test-only and read once at
start:

* ``HARNESS_FSYNC_FAIL=N[:always][:journal|snapshot]``: the N-th ``fsync`` of a state file (of
  that kind) fails with ENOSPC, once or from then on; the moment goes to ``HARNESS_MARK``.
* ``HARNESS_FSYNC_DELAY=SECONDS``: every ``fsync`` takes this long (a slow disk).
* ``HARNESS_SIGNAL_AT_SAVE=SIGTERM:PHASE:N``: during the N-th journal fsync whose batch puts an
  item in PHASE (e.g. ``submitting``: an intent), the process sends itself the signal and
  the save goes on for 0.3 s more, so the stop is handled while that save is under way.
* ``HARNESS_KILL_AT_SAVE=PHASE:N``: SIGKILL at the start of the N-th journal write that puts an
  item in PHASE (where ``IMS_MIGRATE_CRASH_AT=save:N`` kills, but aimed by content: the save of
  the N-th intent, job id or success, however the writes are grouped).
* ``HARNESS_AUDIT=FILE``: every open for writing, rename, removal or truncation under
  ``HARNESS_AUDIT_DIR`` is appended to FILE as one JSON line (through a Python audit hook).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.model import FORWARD_WITHIN_ATTEMPT, Phase
from orchestrator.simulator.truth import Truth
from orchestrator.state.checkpoint import JOURNAL, LOCK, SNAPSHOT, TEMP_PREFIX

if TYPE_CHECKING:  # run as a script, this file imports only what the CLI needs
    from orchestrator.simulator.harness import Cloud

HARNESS = "orchestrator.simulator.crash_harness"  # run with python -m
STATE_FILES = frozenset({LOCK, SNAPSHOT, JOURNAL, "events.jsonl", "report.csv"})


# -- the state machine as the judge sees it ------------------------------------------------------


FORWARD = FORWARD_WITHIN_ATTEMPT  # phases reachable from each phase within one attempt


def _rank(phase: Phase) -> int:
    """Longest path from PENDING within an attempt: a total order consistent with FORWARD."""
    before = [p for p in FORWARD if phase in FORWARD[p]]
    return 0 if not before else 1 + max(_rank(p) for p in before)


PHASE_RANK = {phase: _rank(phase) for phase in Phase}  # pending 0 ... succeeded/failed 5
assert all(PHASE_RANK[b] > PHASE_RANK[a] for a in Phase for b in FORWARD[a])  # forward = up


def item_states(state_dir: Path) -> Iterator[tuple[str, int, Phase]]:
    """(key, attempt, phase) of every item as the next run will load it, in write order.

    ``checkpoint.json`` must parse (the invariant); the journal is read like the store reads it:
    lines of the snapshot's generation, up to a torn tail.
    """
    try:
        snap = json.loads((state_dir / SNAPSHOT).read_text())
    except FileNotFoundError:
        return  # no state yet: the first write of the first run never happened
    generation = snap.get("generation", 0)
    for key, item in snap["items"].items():
        yield key, int(item["attempt"]), Phase(item["phase"])
    try:
        lines = (state_dir / JOURNAL).read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if not line.endswith(b"\n"):
            return
        if entry.get("g") == generation and "item" in entry:
            item = entry["item"]
            row = item["row"]
            key = f"{row['tenant']}/{row['image_id']}/{row['target_region']}"
            yield key, int(item["attempt"]), Phase(item["phase"])


@dataclass
class History:
    """Every (attempt, phase) the state dir showed per item, checked to only ever move forward."""

    seen: dict[str, tuple[int, Phase]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    reads: int = 0

    def _check(self, when: str, key: str, old: tuple[int, Phase], new: tuple[int, Phase]) -> None:
        (old_attempt, old_phase), (attempt, phase) = old, new
        if attempt < old_attempt:
            self.violations.append(f"{when}: {key}: attempt {old_attempt} -> {attempt}")
        elif attempt == old_attempt and phase != old_phase and phase not in FORWARD[old_phase]:
            ranks = f"rank {PHASE_RANK[old_phase]} -> {PHASE_RANK[phase]}"
            self.violations.append(
                f"{when}: {key}: {old_phase} -> {phase} within attempt {attempt} ({ranks})"
            )

    def observe(self, state_dir: Path, when: str = "") -> dict[str, Phase]:
        """Read the state dir; record any backward move; return the current phase per item.

        Within one read, each journal line must move its item forward from the state before it
        (the snapshot's, or an earlier line's); across reads, each item's resulting state must
        move forward from the one the previous read ended with.
        """
        self.reads += 1
        current: dict[str, tuple[int, Phase]] = {}
        try:
            for key, attempt, phase in item_states(state_dir):
                if key in current:
                    self._check(when, key, current[key], (attempt, phase))
                current[key] = (attempt, phase)
        except (ValueError, KeyError) as exc:
            self.violations.append(f"{when}: the state does not load: {exc!r}")
        for key, state in current.items():
            if key in self.seen:
                self._check(when, key, self.seen[key], state)
            self.seen[key] = state
        return {key: phase for key, (_, phase) in current.items()}


def stray_files(state_dir: Path) -> list[str]:
    """Files a finished run should not leave: temp files and anything unknown."""
    return sorted(
        path.name
        for path in state_dir.iterdir()
        if path.name not in STATE_FILES
        and ".damaged-" not in path.name  # set aside on purpose
        and not (path.name.startswith("events.jsonl.") and path.name[13:].isdigit())
    )


def copy_posts(cloud: Cloud) -> list[dict[str, Any]]:
    """Every copy POST the simulator received (accepted or refused), in arrival order, from its
    request log (``GET /_sim/requests``: time, method, kind, account, status, path, fault)."""
    log = cloud.admin("/_sim/requests")["requests"]
    return [
        {"time": r[0], "account": r[3], "status": r[4]} for r in log if r[2] == "copy"
    ]  # fmt: skip


@dataclass(frozen=True)
class EndState:
    """What the simulator and the state dir say once a list is meant to be finished."""

    truth: Truth
    duplicates: list[str]
    copies: int
    items: int
    lost: list[str]  # items not succeeded (or missing from the state)
    stray: list[str]  # files left in the state dir
    max_in_flight: dict[str, int]


def end_state(cloud: Cloud, items: int) -> EndState:
    truth = cloud.truth()
    states = cloud.item_states()
    lost = sorted(key for key, phase in states.items() if phase != Phase.SUCCEEDED)
    lost += ["(missing)"] * max(0, items - len(states))
    return EndState(
        truth=truth,
        duplicates=list(truth.duplicates),
        copies=int(truth.copies_total),
        items=len(states),
        lost=lost,
        stray=stray_files(cloud.state_dir),
        max_in_flight=dict(truth.max_in_flight),
    )


def judge_finished(cloud: Cloud, items: int) -> Truth:
    """The end state every crash test demands: each item copied once and succeeded, nothing
    stray in the state dir, the cap held. Returns the truth for further checks."""
    end = end_state(cloud, items)
    assert end.duplicates == [], end.duplicates
    assert end.copies == items, end.copies
    assert end.items == items
    assert end.lost == [], end.lost
    assert end.stray == []
    assert max(end.max_in_flight.values()) <= 5, end.max_in_flight
    return end.truth


def lost_tags(cloud: Cloud) -> list[str]:
    """Items whose copy lacks a tag or the min_ram of its source (carried after the copy)."""
    from orchestrator.simulator.imageops import tags_of
    from orchestrator.state.checkpoint import read_snapshot

    stored = cloud.admin("/_sim/images")["images"]
    by_id = {image["id"]: image for images in stored.values() for image in images}
    snap = read_snapshot(cloud.state_dir)
    assert snap is not None
    lost = []
    for key, item in snap["items"].items():
        source, copy = by_id[item["row"]["image_id"]], by_id[item["target_image_id"]]
        missing = tags_of(source).items() - tags_of(copy).items()
        if missing or source.get("min_ram", 0) != copy.get("min_ram", 0):
            lost.append(f"{key}: {sorted(missing)} min_ram {copy.get('min_ram')}")
    return lost


# -- driving runs --------------------------------------------------------------------------------


def set_cap(cloud: Cloud, copies: int) -> None:
    """``[defaults] max_concurrent_copies`` in the cloud's config (after ``start``)."""
    text = cloud.config_path.read_text()
    line = 'agency_name = "ims_admin_agency"\n'
    cloud.config_path.write_text(text.replace(line, f"{line}max_concurrent_copies = {copies}\n"))


def harness_args(cloud: Cloud, *extra: str) -> list[str]:
    """The ``run`` command line through this file (faults from the environment)."""
    return [sys.executable, "-m", HARNESS, *cloud.run_args(*extra)[3:]]


SPAWNED: list[subprocess.Popen[bytes]] = []


def spawn(cloud: Cloud, env: Mapping[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """A background run through the harness; stderr to ``run-N.log`` in the cloud's folder.

    Call :func:`reap` when done (the tests' fixture does): a run left behind after its
    simulator is gone would retry for a long time.
    """
    cloud.seq += 1
    with (cloud.root / f"run-{cloud.seq}.log").open("wb") as log:
        process = subprocess.Popen(
            harness_args(cloud, *extra), env=dict(env), stdout=subprocess.DEVNULL, stderr=log
        )
    SPAWNED.append(process)
    return process


def reap() -> None:
    """SIGKILL every run :func:`spawn` started that is still going."""
    while SPAWNED:
        process = SPAWNED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run_to_end(
    cloud: Cloud, history: History | None = None, *, attempts: int = 5, timeout: float = 120
) -> int:
    """Run without faults until exit 0 (75 means "again"); returns how many runs it took."""
    for n in range(1, attempts + 1):
        done = cloud.run(timeout=timeout)
        if history is not None:
            history.observe(cloud.state_dir, f"resume {n}")
        if done.returncode == 0:
            return n
        assert done.returncode == 75, done.stderr
    raise AssertionError(f"not finished after {attempts} runs")


@dataclass
class SweepResult:
    kills: int = 0
    early_kills: int = 0  # aimed at start-up: before the run had written anything
    runs: int = 0
    clean_exits: int = 0  # runs that ended by themselves before their kill
    done_at_last_kill: int = 0  # items succeeded when the last kill came
    cut: int = 0  # journals cut at a random byte after a kill (read as a torn tail)
    repaired: int = 0  # journals with a bad line in the middle: exit 74, then --repair-state
    wall: float = 0.0
    history: History = field(default_factory=History)


def _wait_or_kill(
    process: subprocess.Popen[bytes], state_dir: Path, early: bool, delay: float
) -> int:
    """Kill ``delay`` s after the start (``early``) or after the run's first write, unless it
    ends by itself first; returns its exit code (-9 when killed)."""
    if not early:
        before = _footprint(state_dir)
        while process.poll() is None and _footprint(state_dir) == before:
            time.sleep(0.01)
    try:
        return process.wait(delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        return process.wait(30)


def damage_journal(cloud: Cloud, rng: random.Random, result: SweepResult) -> None:
    """After a kill, damage the journal as a disk might: cut at a random byte (it then reads as
    a torn tail: the state goes back in time), or one line in the middle made unreadable (the
    next run must stop with exit 74 naming it; ``--repair-state`` sets it aside and rebuilds).
    Either way the state went back or was lost: the judge forgets what it saw of it."""
    journal = cloud.state_dir / JOURNAL
    data = journal.read_bytes() if journal.exists() else b""
    lines = data.split(b"\n")
    if len(lines) < 3:  # at least two full lines
        return
    if rng.random() < 0.5:
        journal.write_bytes(data[: rng.randrange(len(data))])
        result.cut += 1
    else:
        number = rng.randrange(len(lines) - 2)
        lines[number] = lines[number].replace(b'":', b'";', 1)
        journal.write_bytes(b"\n".join(lines))
        stopped = cloud.run()
        assert stopped.returncode == 74, stopped.stderr
        assert f"{JOURNAL}:{number + 1}: " in stopped.stderr, stopped.stderr
        repaired = cloud.run("--repair-state", "--deadline", "1")
        assert repaired.returncode in (0, 75), repaired.stderr
        result.repaired += 1
    result.history.seen.clear()


def kill_sweep(
    cloud: Cloud,
    kills: int,
    rng: random.Random,
    *,
    damage_share: float = 0.0,
    early_share: float = 0.25,
    early: tuple[float, float] = (0.05, 1.0),
    late: tuple[float, float] = (0.05, 1.0),
    budget: float | None = None,
    stop_when_done: bool = False,
) -> SweepResult:
    """SIGKILL ``kills`` runs at random moments, checking the state dir after each, then run on
    until exit 0. An ``early_share`` of the kills come ``early`` s after the process starts
    (Python's start-up, the lock, loading); the others ``late`` s after the run's first write
    to the state dir (preflight, submitting, polling), so that they land in the work whatever
    the machine's load. Stops killing once ``budget`` s have passed (or, ``stop_when_done``,
    once a run finishes the list by itself). A ``damage_share`` of the kills are followed by a
    damaged journal (:func:`damage_journal`).
    """
    result = SweepResult()
    started = time.monotonic()
    env = cloud.env()
    while result.kills < kills:
        if budget is not None and time.monotonic() - started > budget:
            break
        aim_early = rng.random() < early_share
        delay = rng.uniform(*(early if aim_early else late))
        process = spawn(cloud, env)
        result.runs += 1
        code = _wait_or_kill(process, cloud.state_dir, aim_early, delay)
        if code == -signal.SIGKILL:
            result.kills += 1
            result.early_kills += aim_early
            if not (cloud.state_dir / SNAPSHOT).exists():
                continue
            if rng.random() < damage_share:
                damage_journal(cloud, rng, result)
        else:
            assert code in (0, 75), (code, (cloud.root / f"run-{cloud.seq}.log").read_text())
            result.clean_exits += 1
            if code == 0 and stop_when_done:
                break
        phases = result.history.observe(cloud.state_dir, f"after run {result.runs} ({code})")
        if code == -signal.SIGKILL:
            result.done_at_last_kill = sum(p == Phase.SUCCEEDED for p in phases.values())
    result.runs += run_to_end(cloud, result.history)
    result.wall = time.monotonic() - started
    return result


def _footprint(state_dir: Path) -> tuple[int, ...]:
    """What a run changes in the state dir as soon as it does anything."""
    out = []
    for name in (SNAPSHOT, JOURNAL, "events.jsonl"):
        try:
            stat = (state_dir / name).stat()
        except FileNotFoundError:
            out += [-1, -1]
        else:
            out += [stat.st_mtime_ns, stat.st_size]
    return tuple(out)


def seed_from_env(name: str = "CRASH_SEED") -> int:
    """The seed of a randomized test: ``$CRASH_SEED`` to reproduce one, else a fresh one."""
    text = os.environ.get(name)
    return int(text) if text else random.SystemRandom().randrange(2**32)


# -- the CLI with faults (run as a script) -------------------------------------------------------


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _read_from(path: str, offset: int) -> bytes:
    with open(path, "rb") as handle:  # the store's own fd is write-only
        size = os.fstat(handle.fileno()).st_size
        handle.seek(offset if offset <= size else 0)  # smaller: truncated by a compaction
        return handle.read()


@dataclass
class _FsyncFaults:
    """What the patched ``os.fsync`` does: see the module docstring."""

    fail_nth: int = 0
    fail_always: bool = False
    fail_kind: str = ""  # "", "journal" or "snapshot"
    delay: float = 0.0
    signal_spec: tuple[int, str, int] | None = None  # (signal, phase, n)
    mark: str = ""
    failures: int = 0
    signal_hits: int = 0
    journal_synced: int = 0  # journal size at its last fsync: what follows is the batch

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> _FsyncFaults:
        faults = cls(delay=float(environ.get("HARNESS_FSYNC_DELAY") or 0))
        faults.mark = environ.get("HARNESS_MARK", "")
        if spec := environ.get("HARNESS_FSYNC_FAIL", ""):
            nth, *rest = spec.split(":")
            faults.fail_nth, faults.fail_always = int(nth), "always" in rest
            faults.fail_kind = next((p for p in rest if p in ("journal", "snapshot")), "")
        if spec := environ.get("HARNESS_SIGNAL_AT_SAVE", ""):
            name, phase, nth = spec.split(":")
            faults.signal_spec = (int(signal.Signals[name]), phase, int(nth))
        return faults

    def _note(self, what: str) -> None:
        if self.mark:
            with open(self.mark, "a") as handle:
                handle.write(f"{time.time()!r} {what}\n")

    def before(self, fd: int) -> None:
        if self.delay:
            time.sleep(self.delay)
        path = _fd_path(fd)
        name = os.path.basename(path)
        if self.signal_spec is not None and name == JOURNAL:
            signum, phase, nth = self.signal_spec
            batch = _read_from(path, self.journal_synced)
            self.journal_synced = os.path.getsize(path)
            if f'"phase":"{phase}"'.encode() in batch:
                self.signal_hits += 1
                if self.signal_hits == nth:
                    self._note(f"signal {signum} while saving {phase}")
                    os.kill(os.getpid(), signum)
                    time.sleep(0.3)  # the save is still under way when the signal is handled
        if not self.fail_nth:
            return
        if self.fail_kind == "journal" and name != JOURNAL:
            return
        if self.fail_kind == "snapshot" and not name.startswith(TEMP_PREFIX):
            return
        self.failures += 1
        if self.failures == self.fail_nth or (self.fail_always and self.failures > self.fail_nth):
            self._note(f"ENOSPC on fsync of {name}")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _install_fsync_faults(environ: Mapping[str, str]) -> None:
    faults = _FsyncFaults.from_env(environ)
    if not (faults.fail_nth or faults.delay or faults.signal_spec):
        return
    real_fsync = os.fsync

    def fsync(fd: Any) -> None:
        faults.before(fd if isinstance(fd, int) else fd.fileno())
        real_fsync(fd)

    os.fsync = fsync


def _written_paths(event: str, args: tuple[Any, ...]) -> list[Any]:
    """The paths an audit event writes to (opens for writing, renames, removals...)."""
    if event == "open" and len(args) >= 3:
        mode, flags = str(args[1] or ""), args[2] or 0
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        return [args[0]] if any(c in mode for c in "wax+") or flags & writes else []
    if event in ("os.rename", "os.replace"):
        return [args[0], args[1]]
    if event in ("os.remove", "os.rmdir", "os.truncate", "os.mkdir", "tempfile.mkstemp"):
        return [args[0]]
    return []


def _install_audit(environ: Mapping[str, str]) -> None:
    target, root = environ.get("HARNESS_AUDIT", ""), environ.get("HARNESS_AUDIT_DIR", "")
    if not target or not root:
        return
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    root = os.path.realpath(root)

    def inside(path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        full = os.path.realpath(os.fsdecode(path))
        return full if full == root or full.startswith(root + os.sep) else None

    def hook(event: str, args: tuple[Any, ...]) -> None:
        hits = [p for p in (inside(p) for p in _written_paths(event, args)) if p]
        if hits:
            record = {"event": event, "paths": hits, "t": time.time()}
            os.write(out, (json.dumps(record) + "\n").encode())

    sys.addaudithook(hook)


def _install_save_kill(environ: Mapping[str, str]) -> None:
    spec = environ.get("HARNESS_KILL_AT_SAVE", "")
    if not spec:
        return
    phase, nth = spec.split(":")
    marker, hits = f'"phase":"{phase}"'.encode(), [0]
    from orchestrator.state.checkpoint import CheckpointStore

    original = CheckpointStore._append

    def append(store: CheckpointStore, lines: list[bytes]) -> None:
        if any(marker in line for line in lines):
            hits[0] += 1
            if hits[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)  # where crashpoints' "save" step is
        original(store, lines)

    setattr(CheckpointStore, "_append", append)  # noqa: B010 -- patching a method on purpose


def main() -> int:
    _install_fsync_faults(os.environ)
    _install_save_kill(os.environ)
    _install_audit(os.environ)
    from orchestrator.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
