"""What ``ims-migrate run`` imports before it starts (``__main__.py``): the time from a resumed
run's start to its first poll counts every import. The other commands' modules and rich's
traceback and pretty-printer (structlog's console renderer) are left out; structlog still
logs, and rich still prints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Modules a run does not need before its first poll (the other commands', a progress view's).
NOT_FOR_A_RUN = (
    "orchestrator.cli.views",
    "orchestrator.cli.discover",
    "orchestrator.commands.cleanup",
    "orchestrator.commands.discover",
    "orchestrator.commands.plan",
    "orchestrator.output.progress",
    "orchestrator.output.report_html",
    "rich.traceback",
    "rich.pretty",
    "rich.live",
    "pygments",
)


def imported_by_run() -> dict[str, object]:
    """In a fresh interpreter: the run's imports (``import_cli(run=True)``), then what they
    left in ``sys.modules``, whether the collector runs, and whether logging and rich work."""
    code = textwrap.dedent(
        """
        import gc, json, sys
        from orchestrator.__main__ import import_cli
        main = import_cli(run=True)
        loaded = sorted(sys.modules)
        import structlog
        from structlog.testing import capture_logs
        with capture_logs() as logs:
            structlog.get_logger().info("probe.event", tenant="t")
        from rich.console import Console
        import rich.traceback  # still importable
        print(json.dumps({
            "loaded": loaded,
            "collector": gc.isenabled(),
            "logged": [log["event"] for log in logs],
            "main": callable(main),
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_run_imports_only_what_it_needs() -> None:
    result = imported_by_run()
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert "orchestrator.cli.run" in loaded
    assert "orchestrator.commands.run" in loaded
    assert "structlog" in loaded
    left_out = [name for name in NOT_FOR_A_RUN if name in loaded]
    assert left_out == []
    assert result["collector"] is True  # paused while importing only
    assert result["logged"] == ["probe.event"]
    assert result["main"] is True
