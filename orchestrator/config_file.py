"""The config file: ``ims-migrate.toml`` read and checked into a :class:`Config`.

Where the file comes from: ``--config FILE``, else ``$IMS_MIGRATE_CONFIG``, else
``./ims-migrate.toml`` if present, else the defaults. Every problem is a :class:`ConfigError`
whose message reads ``file: [section] key: what is wrong (what to do)``; unknown sections and
keys are errors too, so that a typo never passes silently. The shapes it fills are in
orchestrator/config.py.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from orchestrator.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    DEFAULT_LIMIT_GIB,
    KNOWN_REGIONS,
    LARGE_LIMIT_GIB,
    LARGE_LIMIT_REGIONS,
    MAX_CONCURRENT_COPIES,
    SCHEDULING_ORDERS,
    SCHEDULING_POLLING,
    AfterCopy,
    Config,
    ConfigError,
    Endpoints,
    Scheduling,
    TenantConfig,
    Timing,
    frozen_mapping,
)
from orchestrator.config_table import Table
from orchestrator.core.aftercopy import VERIFY_KEYS
from orchestrator.core.order import Order
from orchestrator.core.polling import Polling
from orchestrator.core.suggest import suggest

_TIMING_KEYS = (
    "poll_min", "poll_max", "settle", "backoff_max", "request_timeout", "job_deadline", "outage"
)  # fmt: skip
_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "defaults": ("agency_name", "max_concurrent_copies"),
    "tenants": (),
    "endpoints": ("ims", "iam", "ca_bundle", "ims_by_region"),
    "limits": ("default",),
    "rate": ("requests_per_second", "host_requests_per_second"),
    "timing": _TIMING_KEYS,
    "scheduling": ("order", "polling"),
    "retry": ("fail_codes",),
    "regions": ("extra",),
    "carry": ("tags", "ram"),
    "verify": ("ignore",),
}
_TENANT_KEYS = (
    "access_key_env", "secret_key_env", "security_token_env", "project_ids", "account", "endpoints"
)  # fmt: skip
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REGION_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_NO_SPACE = re.compile(r"\S+")


MIN_REQUESTS_PER_SECOND = 0.01  # [rate] requests_per_second below this is a typo


def _bundle_problem(bundle: Path) -> str:
    """What is wrong with a CA bundle as TLS would load it ("" if nothing): a file that is
    not PEM certificates is a config error now, not a traceback at the first request."""
    try:
        ssl.create_default_context(cafile=str(bundle))
    except ssl.SSLError as exc:
        return f"is not a PEM bundle of CA certificates ({exc.reason or exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return ""


def load_config(path: Path | None, environ: Mapping[str, str], cwd: Path) -> Config:
    """The configuration: ``path`` (``--config``), else ``$IMS_MIGRATE_CONFIG``, else
    ``ims-migrate.toml`` in ``cwd`` if present, else the defaults."""
    if path is not None:
        file, shown, how = cwd / path, str(path), "given with --config"
    elif environ.get(CONFIG_ENV, "").strip():
        named = environ[CONFIG_ENV].strip()
        file, shown, how = cwd / named, named, f"named by ${CONFIG_ENV}"
    elif (cwd / DEFAULT_CONFIG_NAME).exists():
        file, shown, how = cwd / DEFAULT_CONFIG_NAME, DEFAULT_CONFIG_NAME, "in the current folder"
    else:
        return Config()
    data = _read_toml(file, shown, how)
    return _build(data, shown, file)


def _read_toml(file: Path, shown: str, how: str) -> dict[str, Any]:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{shown}: cannot read the config file {how}: {reason}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{shown}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
            "save the file as UTF-8)"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_message(shown, str(exc))) from exc


def _toml_message(shown: str, error: str) -> str:
    where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", error)
    if where:
        what = error[: where.start()]
        return f"{shown}:{where[1]}:{where[2]}: not valid TOML: {what} (fix the syntax there)"
    return f"{shown}: not valid TOML: {error} (fix the syntax; see https://toml.io)"


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an http(s) URL (e.g. https://ims.{{region}}.myhuaweicloud.com)"
    return None


def _ims_template_problem(template: str) -> str | None:
    if "{region}" not in template:
        return f"{template!r} must contain {{region}} (e.g. https://ims.{{region}}.example.com)"
    try:
        url = template.format(region="cn-north-4")
    except (KeyError, IndexError, ValueError):
        return f"{template!r} may contain no placeholder other than {{region}}"
    return _url_problem(url)


def _env_name_problem(value: str) -> str | None:
    # The value is not echoed: it may be a key pasted where its variable's name belongs.
    if _ENV_NAME.fullmatch(value.strip()):
        return None
    return (
        "is not an environment variable name (give the NAME of the variable that holds the "
        "key, e.g. PROD_AK, never the key itself)"
    )


def _no_space_problem(value: str) -> str | None:
    return None if _NO_SPACE.fullmatch(value) else f"{value!r} must be one word without spaces"


def _region_id_problem(value: str) -> str | None:
    if _REGION_ID.fullmatch(value):
        return None
    return f"{value!r} is not a region id (lower-case letters, digits and -, e.g. cn-north-4)"


def _build(data: Mapping[str, Any], shown: str, file: Path) -> Config:
    top = Table(shown, "", data)
    for key, value in data.items():
        if key not in _SECTIONS:
            homes = [name for name, keys in _SECTIONS.items() if key in keys]
            hint = f"did you mean [{homes[0]}] {key}? " if homes else suggest(key, _SECTIONS)
            raise ConfigError(
                f"{shown}: [{key}]: unknown section ({hint}known sections: {', '.join(_SECTIONS)})"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{shown}: {key}: must be a section (write [{key}] on a line of its own)"
            )

    regions = top.sub("regions", "regions")
    regions.only(_SECTIONS["regions"])
    extra = regions.strings("extra", _region_id_problem) or ()
    known = KNOWN_REGIONS | set(extra)

    def region_key(table: Table, key: str) -> None:
        if key not in known:
            raise table.error(
                key,
                f"unknown region ({suggest(key, known)}a private region can be added with "
                "[regions] extra = [...])",
            )

    defaults = top.sub("defaults", "defaults")
    defaults.only(_SECTIONS["defaults"])
    agency = defaults.text("agency_name")
    max_copies = defaults.integer("max_concurrent_copies", 1, MAX_CONCURRENT_COPIES)

    endpoints = _endpoints(top.sub("endpoints", "endpoints"), file, region_key)
    limits, default_limit = _limits(top.sub("limits", "limits"), region_key)

    rate = top.sub("rate", "rate")
    rate.only(_SECTIONS["rate"])
    per_second = rate.positive("requests_per_second")
    if per_second is not None and per_second < MIN_REQUESTS_PER_SECOND:
        raise rate.error(
            "requests_per_second",
            f"{per_second!r} is too low: at least {MIN_REQUESTS_PER_SECOND} (one request every "
            f"{1 / MIN_REQUESTS_PER_SECOND:.0f} s); a smaller budget would make the run wait "
            "for ever without a word",
        )
    host_per_second = rate.positive("host_requests_per_second")

    timing = _timing(top.sub("timing", "timing"))
    scheduling = _scheduling(top.sub("scheduling", "scheduling"))

    retry = top.sub("retry", "retry")
    retry.only(_SECTIONS["retry"])
    fail_codes = retry.strings("fail_codes", _no_space_problem)

    after = _after_copy(top.sub("carry", "carry"), top.sub("verify", "verify"))
    base = Config()
    return Config(
        agency_name=agency,
        max_concurrent_copies=max_copies or base.max_concurrent_copies,
        tenants=_tenants(
            top.sub("tenants", "tenants"),
            lambda table: _endpoints(table, file, region_key, endpoints),
        ),
        endpoints=endpoints,
        size_limits_gib=limits,
        default_limit_gib=default_limit,
        requests_per_second=per_second or base.requests_per_second,
        host_requests_per_second=host_per_second or base.host_requests_per_second,
        timing=timing,
        scheduling=scheduling,
        after=after,
        retry_fail_codes=base.retry_fail_codes if fail_codes is None else fail_codes,
        extra_regions=extra,
        source=file,
    )


def _after_copy(carry: Table, verify: Table) -> AfterCopy:
    carry.only(_SECTIONS["carry"])
    verify.only(_SECTIONS["verify"])
    tags, ram = carry.boolean("tags"), carry.boolean("ram")

    def field_problem(name: str) -> str | None:
        if name in VERIFY_KEYS:
            return None
        return f"{name!r} is not a compared field ({suggest(name, VERIFY_KEYS)}known: " + (
            ", ".join(VERIFY_KEYS) + ")"
        )

    return AfterCopy(
        carry_tags=True if tags is None else tags,
        carry_ram=True if ram is None else ram,
        verify_ignore=verify.strings("ignore", field_problem) or (),
    )


def _tenants(table: Table, site: Callable[[Table], Endpoints]) -> Mapping[str, TenantConfig]:
    """``site``: a tenant's ``[tenants.NAME.endpoints]`` over the run's ``[endpoints]``."""
    tenants: dict[str, TenantConfig] = {}
    for name in table.data:
        if not _TENANT_NAME.fullmatch(name):
            raise table.error(
                name, "is not a usable tenant name (letters, digits, -, _ and ., at most 64)"
            )
        section = f"tenants.{name}"
        tenant = table.sub(name, section)
        tenant.only(_TENANT_KEYS)
        projects = tenant.sub("project_ids", f"{section}.project_ids")
        project_ids = {key: projects.text(key, _no_space_problem) or "" for key in projects.data}
        base = TenantConfig(name=name)
        tenants[name] = TenantConfig(
            name=name,
            access_key_env=tenant.text("access_key_env", _env_name_problem) or base.access_key_env,
            secret_key_env=tenant.text("secret_key_env", _env_name_problem) or base.secret_key_env,
            security_token_env=tenant.text("security_token_env", _env_name_problem)
            or base.security_token_env,
            project_ids=frozen_mapping(project_ids),
            account=tenant.text("account", _no_space_problem),
            endpoints=site(tenant.sub("endpoints", f"{section}.endpoints"))
            if "endpoints" in tenant.data
            else None,
        )
    return MappingProxyType(tenants)


def _endpoints(
    table: Table,
    file: Path,
    region_key: Callable[[Table, str], None],
    base: Endpoints | None = None,
) -> Endpoints:
    """``[endpoints]``, or a tenant's over ``base`` (the run's): keys it does not set are
    the run's, ``ims_by_region`` entries are added to the run's."""
    table.only(_SECTIONS["endpoints"])
    base = base or Endpoints()
    ca_bundle = table.text("ca_bundle")
    if ca_bundle is not None:
        bundle = file.parent / Path(ca_bundle).expanduser()
        if not bundle.is_file():
            raise table.error(
                "ca_bundle",
                f"{ca_bundle!r} is not a file (a relative path is read from the config "
                "file's folder)",
            )
        problem = _bundle_problem(bundle)
        if problem:
            raise table.error("ca_bundle", f"{ca_bundle!r} {problem}")
        ca_bundle = str(bundle)
    overrides = table.sub("ims_by_region", f"{table.section}.ims_by_region")
    by_region: dict[str, str] = dict(base.ims_by_region)
    for region in overrides.data:
        region_key(overrides, region)
        by_region[region] = overrides.text(region, _url_problem) or ""
    return Endpoints(
        ims=table.text("ims", _ims_template_problem) or base.ims,
        iam=table.text("iam", _url_problem) or base.iam,
        ca_bundle=ca_bundle or base.ca_bundle,
        ims_by_region=frozen_mapping(by_region),
    )


def _limits(
    table: Table, region_key: Callable[[Table, str], None]
) -> tuple[Mapping[str, int], int]:
    limits = dict.fromkeys(LARGE_LIMIT_REGIONS, LARGE_LIMIT_GIB)
    default = DEFAULT_LIMIT_GIB
    for key in table.data:
        if key != "default":
            region_key(table, key)
        value = table.integer(key, 1) or DEFAULT_LIMIT_GIB  # present, so never None
        if key == "default":
            default = value
        else:
            limits[key] = value
    return MappingProxyType(limits), default


def _scheduling(table: Table) -> Scheduling:
    table.only(_SECTIONS["scheduling"])

    def one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
        return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"

    base = Scheduling()
    order = table.text("order", one_of(SCHEDULING_ORDERS))
    polling = table.text("polling", one_of(SCHEDULING_POLLING))
    return Scheduling(
        order=Order(order) if order else base.order,
        polling=Polling(polling) if polling else base.polling,
    )


def _timing(table: Table) -> Timing:
    table.only(_TIMING_KEYS)
    base = Timing()
    values = {key: table.positive(key, duration=True) for key in _TIMING_KEYS}
    timing = Timing(**{key: getattr(base, key) if v is None else v for key, v in values.items()})
    if timing.poll_min > timing.poll_max:
        raise table.error(
            "poll_min",
            f"{timing.poll_min:g} s is more than poll_max ({timing.poll_max:g} s) "
            "(the shortest wait between polls cannot exceed the longest)",
        )
    return timing
