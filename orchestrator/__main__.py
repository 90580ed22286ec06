"""``python -m orchestrator`` and the ``ims-migrate`` script: a run hears signals before the
(slow) imports of the tool; the other commands keep the default handling."""

import sys

from orchestrator import early_signals


def main() -> None:
    hold = sys.argv[1:2] == ["run"]
    if hold:
        early_signals.install()
    from orchestrator.cli import entrypoint

    entrypoint()


if __name__ == "__main__":
    main()
