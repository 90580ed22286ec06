"""``python -m orchestrator`` and the ``ims-migrate`` script: a run hears signals before the
(slow) imports of the tool, and ends without tearing its heap down (``fast_exit.py``: seconds
at 100,000 items); the other commands keep the default handling.

A run's imports are part of the time from its start to its first poll (a resumed 100,000-item
list: about a sixth of it), so :func:`import_cli` makes them cheaper for ``run``: no cyclic
garbage collection while the modules load (it walks every object they make, again and again,
and finds no garbage there), and structlog without rich (below). The other commands import
what they need as they run (``cli/__init__.py``)."""

import gc
import sys
from collections.abc import Callable

from orchestrator import early_signals, fast_exit


def import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it. When rich is installed, ``structlog.dev`` (its
    console renderer) and ``structlog.tracebacks`` import rich's traceback and pretty-printer,
    pygments and attrs with them: a tenth of a second. This tool never renders an event on a
    console (``logs.py`` writes each as a JSON line to events.jsonl, and its configuration
    replaces structlog's default processors), so nothing it does uses them; rich itself stays
    importable (the CLI prints with it), only structlog's own use of it is off."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return  # already imported: nothing left to spare
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` is an ImportError
    try:
        import structlog  # noqa: F401 -- imported for its side effect on sys.modules
    finally:
        del sys.modules["rich"]


def import_cli(*, run: bool) -> Callable[[], int]:
    """The CLI's ``main``, imported; for ``run`` with the collector paused and structlog
    imported without rich (see above)."""
    if not run:
        from orchestrator.cli import main as cli_main

        return cli_main
    paused = gc.isenabled()
    gc.disable()
    try:
        import_structlog_without_rich()
        from orchestrator.cli import main as cli_main
    finally:
        if paused:
            gc.enable()
    return cli_main


def main() -> None:
    hold = sys.argv[1:2] == ["run"]
    if hold:
        early_signals.install()
        fast_exit.arm()
    cli_main = import_cli(run=hold)
    code = cli_main()
    if hold:  # saved, reported, said, the lock released: what is left is only the teardown
        fast_exit.exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
