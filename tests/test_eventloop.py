"""The event loop the commands run on: uvloop by default where it is installed, asyncio's own
on request, a clear usage error for a wrong choice or a missing uvloop."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from orchestrator.commands.common import UsageError
from orchestrator.eventloop import LOOP_ENV, backend_options, loop_name, run_loop
from orchestrator.simulator.harness import Cloud

uvloop = pytest.importorskip("uvloop")  # a dependency on Linux: present in the test env


def test_uvloop_is_the_default_where_it_is_installed() -> None:
    assert backend_options({}) == {"use_uvloop": True}
    assert backend_options({LOOP_ENV: " "}) == {"use_uvloop": True}
    assert backend_options({LOOP_ENV: "UVLOOP"}) == {"use_uvloop": True}


def test_asyncio_on_request() -> None:
    assert backend_options({LOOP_ENV: "asyncio"}) == {}


def test_a_wrong_choice_is_a_usage_error_that_names_the_choices() -> None:
    with pytest.raises(UsageError, match="expected one of auto, uvloop, asyncio"):
        backend_options({LOOP_ENV: "trio"})


def test_without_uvloop_auto_falls_back_and_an_explicit_choice_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert backend_options({}) == {}
    with pytest.raises(UsageError, match="uvloop is not installed"):
        backend_options({LOOP_ENV: "uvloop"})


@pytest.mark.parametrize(("env", "expected"), [({}, "uvloop"), ({LOOP_ENV: "asyncio"}, "asyncio")])
def test_run_loop_runs_on_the_chosen_loop(env: dict[str, str], expected: str) -> None:
    async def which() -> str:
        return loop_name()

    assert run_loop(which, env) == expected


def loops_of(cloud: Cloud) -> list[Any]:
    lines = (cloud.state_dir / "events.jsonl").read_text().splitlines()
    return [e["event_loop"] for e in map(json.loads, lines) if e["event"] == "run.loaded"]


@pytest.mark.e2e
def test_a_run_says_which_loop_it_ran_on_and_finishes_on_either(cloud: Cloud) -> None:
    cloud.account("t0")
    for n in range(3):
        cloud.row("t0", n)
    cloud.start()
    first = cloud.run(env=cloud.env(**{LOOP_ENV: "asyncio"}))
    assert first.returncode == 0, first.stderr
    second = cloud.run()  # all done already: loads, finds nothing to do
    assert second.returncode == 0, second.stderr
    assert loops_of(cloud) == ["asyncio", "uvloop"]
    truth = cloud.truth()
    assert truth.copies_total == 3
    assert truth.duplicates == ()
