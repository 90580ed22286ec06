"""What ``run`` and ``plan`` share: the usage error, the state dir a list owns, its credentials,
the check of the filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from orchestrator.config import Config, ConfigError, TenantConfig, resolve_credentials
from orchestrator.core.credentials import Credentials
from orchestrator.core.model import Row
from orchestrator.core.suggest import suggest
from orchestrator.state.meta import RunMeta

TenantCredentials = Mapping[str, tuple[TenantConfig, Credentials]]


class StoppedAtOnce(Exception):
    """A second SIGINT/SIGTERM ended the run at once, without its graceful stop's last saves:
    what it saved is durable (each journal write fsynced); run again later (exit 75)."""


class UsageError(Exception):
    """Bad input, config or state dir: nothing was submitted (exit 2)."""


def default_state_dir(list_path: Path) -> Path:
    """The list's path without its suffix, plus ``.state``."""
    return list_path.with_name(list_path.stem + ".state")


def state_dir_for(list_path: Path, state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else default_state_dir(list_path)


def check_owner(meta: RunMeta, list_path: Path, state_dir: Path) -> None:
    """A state dir belongs to one list (by its resolved path)."""
    owner = meta.list_path
    if owner and owner != str(list_path.resolve()):
        raise UsageError(
            f"{state_dir}: this state dir belongs to the list {owner}, not {list_path.resolve()}; "
            "give this list its own --state-dir"
        )


def tenant_credentials(
    config: Config, environ: Mapping[str, str], tenants: Iterable[str]
) -> dict[str, tuple[TenantConfig, Credentials]]:
    """Every tenant's credentials, before any call: a missing variable is a usage error."""
    out = {}
    for name in sorted(tenants):
        tenant = config.tenant(name)
        if tenant is None:
            raise UsageError(f"tenant {name!r} is not in the config: add [tenants.{name}]")
        try:
            out[name] = (tenant, resolve_credentials(tenant, environ))
        except ConfigError as exc:
            raise UsageError(str(exc)) from exc
    return out


Filters = tuple[frozenset[str], frozenset[str], frozenset[str]]  # tenants, sources, targets


def check_filters(list_path: Path, filters: Filters, listed: Sequence[Row]) -> None:
    """A --tenant/--source-region/--target-region that matches no row of the list is a typo,
    not a finished run nor an empty plan (a cron line with it would report success for ever):
    UsageError. ``listed``: the rows of the list, the ones its checks refused included."""
    tenants, sources, targets = filters
    checks = (
        ("--tenant", tenants, {row.tenant for row in listed}),
        ("--source-region", sources, {row.source_region for row in listed}),
        ("--target-region", targets, {row.target_region for row in listed}),
    )
    for flag, wanted, present in checks:
        for value in sorted(wanted - present):
            known = ", ".join(sorted(present)[:10])
            raise UsageError(
                f"{flag} {value}: no row of {list_path} has it "
                f"({suggest(value, present)}the list has: {known}); nothing was run"
            )
    if any(filters) and not any(row.matches(*filters) for row in listed):
        given = " ".join(f"{flag} {v}" for flag, wanted, _ in checks for v in sorted(wanted))
        raise UsageError(f"{given}: no row of {list_path} matches all of these; nothing was run")
