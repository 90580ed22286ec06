"""``ims-migrate discover``: the migration list, built from what the cloud holds. Read-only.

For every tenant (of the config, or those named) and source region, the private images are
listed page by page (500 a page, ``marker`` the last id) with the documented server-side
filters, filtered again locally, and judged by the preflight's rules
(``orchestrator/core/discovery.py``). Each eligible (image, target region) becomes a row.

``--output`` writes a new list (an existing file is refused). ``--append`` adds the rows whose
key (tenant, image_id, target_region) the list lacks, after the existing bytes, which stay as
they were; the file is replaced atomically (temp file + fsync + rename), and created when absent.

Each tenant's credentials are checked with one request (the IAM project lookup ``run`` makes)
before its listings, unless a run of the list saw these very credentials refused (then they
are not tried again); a refused tenant or an unreachable region is named and the others are
still written (exit 1). It never copies, never takes a state dir's lock, makes no mutating call.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory, open_clouds
from orchestrator.commands.common import (
    TenantCredentials,
    UsageError,
    default_state_dir,
    tenant_credentials,
)
from orchestrator.config import KNOWN_REGIONS, Config
from orchestrator.core.cloud import CloudError, Image, TenantCloud
from orchestrator.core.credentials import credential_fingerprint
from orchestrator.core.discovery import (
    DEFAULT_TENANT,
    TOOL_COPY,
    ExistingList,
    Filters,
    Finding,
    judge,
    read_existing,
    render_rows,
    render_skipped,
    sort_key,
)
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Row
from orchestrator.core.suggest import suggest
from orchestrator.manifest_rows import REQUIRED_COLUMNS
from orchestrator.state.atomic import fsync_dir, write_atomic
from orchestrator.state.checkpoint import CheckpointCorrupt, read_snapshot, snapshot_meta
from orchestrator.state.meta import RunMeta

LIST_CONCURRENCY = 4  # listings in flight at once, over all tenants


@dataclass(frozen=True)
class DiscoverRequest:
    config: Config
    environ: Mapping[str, str]
    source_regions: tuple[str, ...]
    target_regions: tuple[str, ...]
    list_path: Path
    append: bool = False  # False: --output (a new file), True: --append
    tenants: tuple[str, ...] = ()  # () = every tenant of the config
    filters: Filters = field(default_factory=Filters)
    include_ineligible: bool = False
    fmt: str | None = None  # csv | jsonl; None: from the list's suffix
    skipped_path: Path | None = None


@dataclass
class Tally:
    """What one (tenant, source region) gave."""

    tenant: str
    region: str
    found: int = 0  # images the listing returned
    not_matching: int = 0  # images the local filters dropped
    listed: int = 0  # rows added to the list
    already: int = 0  # rows whose key the list already had
    left_out: Counter[str] = field(default_factory=Counter)  # rows, by first reason
    flagged: Counter[str] = field(default_factory=Counter)  # rows listed with a flag or
    error: str = ""  # reason (--include-ineligible); why it could not be listed


@dataclass(frozen=True)
class Progress:
    """A listing started (``found`` None), ended, or failed (``error``)."""

    tenant: str
    region: str
    found: int | None = None
    error: str = ""


@dataclass
class DiscoverResult:
    list_path: Path
    tallies: list[Tally] = field(default_factory=list)
    added: list[Row] = field(default_factory=list)
    left_out: list[Finding] = field(default_factory=list)
    flagged: list[Finding] = field(default_factory=list)
    wrote: bool = False  # the list file was written (created or extended)
    targets: int = 1  # target regions: each matching image gives one row per target

    @property
    def failures(self) -> list[Tally]:
        return [tally for tally in self.tallies if tally.error]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.ATTENTION if self.failures else ExitCode.OK


def list_format(path: Path, fmt: str | None) -> str:
    """The list's format: its suffix decides (``run`` reads it by suffix)."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("csv", "jsonl"):
        raise UsageError(f"{path}: name the list .csv or .jsonl (run reads the format by suffix)")
    if fmt is not None and fmt != suffix:
        raise UsageError(f"--format {fmt} does not fit {path} (a .{suffix} file)")
    return suffix


def _check_request(request: DiscoverRequest) -> list[str]:
    config = request.config
    for region in (*request.source_regions, *request.target_regions):
        if not config.knows_region(region):
            known = sorted(config.extra_regions) + sorted(KNOWN_REGIONS)
            raise UsageError(
                f"unknown region {region!r} ({suggest(region, known)}a private region can be "
                "added with [regions] extra = [...] in the config)"
            )
    if not request.source_regions or not request.target_regions:
        raise UsageError("give at least one --source-region and one --target-region")
    if not config.agency_name:
        raise UsageError(
            "no [defaults] agency_name in the config: run would reject every discovered row "
            "(no_agency); set it (the IMS console usually creates ims_admin_agency)"
        )
    return list(request.tenants) or sorted(config.tenants) or [DEFAULT_TENANT]


def _existing(request: DiscoverRequest, fmt: str) -> tuple[bytes, ExistingList | None]:
    """The list's bytes and keys (--append), or nothing (a new list)."""
    path = request.list_path
    if not request.append:
        if path.exists():
            raise UsageError(f"--output {path}: the file exists; use --append to add to it")
        return b"", None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return b"", None
    except OSError as exc:
        raise UsageError(f"--append {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--append {path}: not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        return b"", None
    existing = read_existing(text, fmt)
    missing = [c for c in REQUIRED_COLUMNS if existing.header and c not in existing.header]
    if missing:
        raise UsageError(f"--append {path}: its header lacks {', '.join(missing)}")
    return raw, existing


async def discover(
    request: DiscoverRequest,
    *,
    clouds: CloudFactory = open_clouds,
    clock: Clock | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> DiscoverResult:
    """List, judge and write; see the module's text. Usage problems raise ``UsageError``."""
    fmt = list_format(request.list_path, request.fmt)
    tenants = _check_request(request)
    raw, existing = _existing(request, fmt)
    credentials = tenant_credentials(request.config, request.environ, tenants)
    notify = on_progress or (lambda _progress: None)
    result = DiscoverResult(request.list_path, targets=len(request.target_regions))
    held = remembered_blocks(request.list_path, credentials)
    listings: dict[tuple[str, str], list[Image]] = {}
    async with clouds(request.config, credentials, clock or RealClock()) as opened:
        await _list_all(request, opened, tenants, result, listings, notify, held)
    keys = existing.keys if existing is not None else frozenset()
    found: list[Finding] = []
    for tally in result.tallies:
        for image in listings.get((tally.tenant, tally.region), []):
            found.extend(_judge(request, tally, image, keys, result))
    found.sort(key=sort_key)
    result.added = [v.row for v in found]
    result.left_out.sort(key=sort_key)
    _write(request, fmt, raw, existing, result)
    if request.skipped_path is not None:
        write_replacing(request.skipped_path, render_skipped(result.left_out).encode("utf-8"))
    return result


async def _list_all(
    request: DiscoverRequest,
    opened: Mapping[str, TenantCloud],
    tenants: Sequence[str],
    result: DiscoverResult,
    listings: dict[tuple[str, str], list[Image]],
    notify: Callable[[Progress], None],
    held: Mapping[str, str],
) -> None:
    limiter = anyio.CapacityLimiter(LIST_CONCURRENCY)
    query = request.filters.server_query()
    for tenant in tenants:
        result.tallies.extend(Tally(tenant, region) for region in request.source_regions)

    async def one_tenant(tenant: str, cloud: TenantCloud) -> None:
        mine = [t for t in result.tallies if t.tenant == tenant]
        if tenant in held:
            _fail(mine, held[tenant], notify)
            return
        try:  # one request checks the credentials before any listing (a bad key is not
            await cloud.probe(request.source_regions[0])  # walked into the lock)
        except CloudError as error:
            _fail(mine, f"credentials or endpoint refused: {error}", notify)
            return

        async def one_region(tally: Tally) -> None:
            async with limiter:
                notify(Progress(tenant, tally.region))
                try:
                    images = await cloud.list_images(tally.region, filters=query)
                except CloudError as error:
                    tally.error = f"could not list {tally.region}: {error}"
                    notify(Progress(tenant, tally.region, error=tally.error))
                    return
            listings[(tenant, tally.region)] = images
            tally.found = len(images)
            notify(Progress(tenant, tally.region, found=len(images)))

        async with anyio.create_task_group() as group:
            for tally in mine:
                group.start_soon(one_region, tally)

    async with anyio.create_task_group() as group:
        for tenant in tenants:
            group.start_soon(one_tenant, tenant, opened[tenant])


def _fail(tallies: Sequence[Tally], why: str, notify: Callable[[Progress], None]) -> None:
    for tally in tallies:
        tally.error = why
        notify(Progress(tally.tenant, tally.region, error=why))


def remembered_blocks(list_path: Path, credentials: TenantCredentials) -> dict[str, str]:
    """Tenants whose very credentials a run of this list saw refused (its checkpoint, read
    without the lock, as ``status`` reads it): not tried again, as ``run`` and ``plan`` do not
    (the gateway locks a key after 5 bad signatures in a row; cron runs discover every hour).
    A missing or unreadable checkpoint holds nobody back: ``run`` judges that one."""
    state_dir = default_state_dir(list_path)
    try:
        snap = read_snapshot(state_dir)
        meta = snapshot_meta(snap, state_dir) if snap is not None else RunMeta()
    except (CheckpointCorrupt, OSError, ValueError):
        return {}
    held = {}
    for tenant, why in meta.blocked.items():
        if tenant in credentials and why.fingerprint == credential_fingerprint(
            credentials[tenant][1]
        ):
            held[tenant] = (
                f"credentials refused by an earlier run ({why.code}: {why.message}); not tried "
                "again until they change: fix them"
            )
    return held


def _judge(
    request: DiscoverRequest,
    tally: Tally,
    image: Image,
    keys: frozenset[str],
    result: DiscoverResult,
) -> list[Finding]:
    """The rows this image adds; the tally and the left-out list learn the rest."""
    if not request.filters.matches(image):
        tally.not_matching += 1
        return []
    out = []
    for target in request.target_regions:
        found = judge(tally.tenant, image, tally.region, target, request.config)
        if found.rejections and (found.reason == TOOL_COPY or not request.include_ineligible):
            tally.left_out[found.reason] += 1
            result.left_out.append(found)
            continue
        if found.row.key in keys:
            tally.already += 1
            continue
        tally.listed += 1
        notes = [*(r.code for r in found.rejections), *(f.code for f in found.flags)]
        tally.flagged.update(notes)
        if notes:
            result.flagged.append(found)
        out.append(found)
    return out


def _write(
    request: DiscoverRequest,
    fmt: str,
    raw: bytes,
    existing: ExistingList | None,
    result: DiscoverResult,
) -> None:
    """A new list, or the old bytes plus the new rows; nothing when --append adds nothing."""
    path = request.list_path
    if existing is not None and not result.added:
        return
    newline = existing.newline if existing is not None else "\n"
    header = existing.header if existing is not None else None
    try:
        text = render_rows(result.added, fmt, header=header, newline=newline)
    except ValueError as exc:
        raise UsageError(f"--append {path}: {exc}; add that column to the list") from exc
    if raw and not raw.endswith(b"\n"):
        raw += newline.encode()
    data = raw + text.encode("utf-8")
    if request.append:
        write_replacing(path, data)
    else:
        write_new(path, data)
    result.wrote = True


# -- writing files ---------------------------------------------------------------------------


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_replacing(path: Path, data: bytes) -> None:
    """Replace (or create) ``path``: temp file in the same folder, fsync, rename, fsync of the
    folder (``state/atomic.py``). An existing file keeps its permissions."""
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = _new_file_mode()
        write_atomic(path, data, durable=True, mode=mode)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write it ({exc.strerror or exc})") from exc


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, never replacing a file: the temp file is hard-linked to
    the name, which fails if it exists (where hard links are not allowed, the check before it
    is the guard)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode())
    except OSError as exc:
        raise UsageError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"--output {path}: the file exists; use --append to add to it") from None
    except OSError:
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
