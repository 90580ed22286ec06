"""Replacing a file whole: a reader sees the old version or the new one, never a part.

The one way this program rewrites a file (the checkpoint's snapshot, report.csv, the metrics
file, and the simulator's scenario and port files): write a temp file in the same folder,
rename it over the target (``os.replace``: atomic within a file system). When the new version
must also survive a power loss (design I4: the snapshot), the temp file is fsynced before the
rename and the folder after it, so the rename itself is on disk.

Errors are the caller's to word: any ``OSError`` (disk full, a failing fsync, a missing folder)
propagates after the temp file is removed. A temp file left by a kill is swept by its owner
at start, by its prefix (``checkpoint.TEMP_PREFIX``, ``commands.run.REPORT_TEMP``).

Standard library only, and nothing of the product: the simulator uses it too, and depends on
this primitive, not on the product's state.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomic(
    path: Path,
    data: str | bytes | Iterable[bytes],
    *,
    durable: bool,
    prefix: str | None = None,
    suffix: str = "",
    mode: int | None = None,
) -> None:
    """Replace ``path`` by ``data`` (text is written as UTF-8, as is; parts are written in turn).

    ``durable``: fsync the file before the rename and the folder after it. ``prefix`` and
    ``suffix`` name the temp file (default ``.<name>.``: hidden); ``mode``: its permissions
    (default 0600, from ``mkstemp``), kept by the rename.
    """
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, str):
                handle.write(data.encode())
            elif isinstance(data, bytes):
                handle.write(data)
            else:
                for part in data:
                    handle.write(part)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
