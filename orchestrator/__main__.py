"""``python -m orchestrator`` and the ``ims-migrate`` script: a run hears signals before the
(slow) imports of the tool, and ends without tearing its heap down (``fast_exit.py``: seconds
at 100,000 items); the other commands keep the default handling."""

import sys

from orchestrator import early_signals, fast_exit


def main() -> None:
    hold = sys.argv[1:2] == ["run"]
    if hold:
        early_signals.install()
        fast_exit.arm()
    from orchestrator.cli import main as cli_main

    code = cli_main()
    if hold:  # saved, reported, said, the lock released: what is left is only the teardown
        fast_exit.exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
