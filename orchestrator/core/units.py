"""Units shared by the core, the output and the simulator. Pure."""

from __future__ import annotations

GIB = 2**30  # bytes in a GiB; IMS sizes (min_disk, the 300/128 limits) are GiB
