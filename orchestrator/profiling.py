"""Diagnostics only: ``IMS_MIGRATE_PROFILE_STOP=FILE`` profiles a run from the moment it hears a
stop (a signal) to the process's exit, and writes the cProfile statistics to FILE (read them
with ``python -m pstats FILE``). What the stop of a 100,000-item run spends its seconds on, for
``scripts/bench scale``. Unset (always, outside a measurement), :func:`profile_stop` does
nothing.
"""

from __future__ import annotations

import atexit
import cProfile
import os

ENV = "IMS_MIGRATE_PROFILE_STOP"
_started: list[cProfile.Profile] = []


def profile_stop() -> None:
    """Start the stop's profile (once), to be written at the process's exit."""
    path = os.environ.get(ENV)
    if not path or _started:
        return
    profile = cProfile.Profile()
    _started.append(profile)
    atexit.register(_dump, profile, path)
    profile.enable()


def _dump(profile: cProfile.Profile, path: str) -> None:
    profile.disable()
    profile.dump_stats(path)
