"""The exit codes of ``ims-migrate``, defined once. Pure.

=====  ===========  ==========================================================================
code   name         meaning
=====  ===========  ==========================================================================
0      OK           every item succeeded (or, for ``plan``, the list can go)
1      ATTENTION    failed or rejected items, bad rows, a blocked tenant, a full target quota
                    or a failure threshold reached: someone must look
2      USAGE        usage, config or input error: nothing was submitted
70     INTERNAL     internal error (a bug)
74     STORE        the state cannot be saved (disk full, permissions)
75     LATER        the lock is held, or the run stopped early with work left (deadline,
                    signal, outage): run again later
=====  ===========  ==========================================================================

Most severe first when several apply: 2, 74, 70, 1, 75, 0. The values follow ``sysexits.h``
where one fits (64+ codes: 70 EX_SOFTWARE, 74 EX_IOERR, 75 EX_TEMPFAIL).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ATTENTION = 1
    USAGE = 2
    INTERNAL = 70
    STORE = 74
    LATER = 75
