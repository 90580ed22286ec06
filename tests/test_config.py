"""Config loading, durations and credentials: every problem named, never guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import (
    DEFAULT_LIMIT_GIB,
    Config,
    ConfigError,
    TenantConfig,
    parse_duration,
    resolve_credentials,
)
from orchestrator.config_file import load_config
from orchestrator.core.credentials import Credentials, credential_fingerprint
from orchestrator.core.order import Order
from orchestrator.core.polling import Polling

TEST_CA = Path(__file__).parent / "fixtures" / "test-ca.pem"  # a self-signed CA, PEM


def write(folder: Path, text: str, name: str = "ims-migrate.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(folder: Path, text: str) -> Config:
    write(folder, text, "given.toml")
    return load_config(Path("given.toml"), {}, folder)


def error_of(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(folder, text)
    return str(caught.value)


# --- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("50m", 3000.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("3600", 3600.0),
        ("2.5", 2.5),
        ("1d2h3m4s", 93784.0),
        (" 2H ", 7200.0),
        ("0.5s", 0.5),
    ],
)
def test_parse_duration_accepts_documented_forms(text: str, seconds: float) -> None:
    """Every documented DURATION form gives its number of seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "1h30", "m", "-5s", "30m1h", "1e3", "inf", "5 m"])
def test_parse_duration_rejects_other_text(text: str) -> None:
    """Anything else is a ValueError that shows the accepted forms."""
    with pytest.raises(ValueError, match=r"not a duration: use e\.g\. 90s, 50m"):
        parse_duration(text)


# --- where the file comes from --------------------------------------------------------------


def test_no_file_anywhere_gives_defaults(tmp_path: Path) -> None:
    """Without --config, $IMS_MIGRATE_CONFIG or ./ims-migrate.toml, the defaults apply."""
    config = load_config(None, {}, tmp_path)
    assert config == Config()
    assert config.source is None


def test_file_in_cwd_is_used(tmp_path: Path) -> None:
    """./ims-migrate.toml is read when present, and recorded as the source."""
    path = write(tmp_path, '[defaults]\nagency_name = "ims_admin_agency"\n')
    config = load_config(None, {}, tmp_path)
    assert config.agency_name == "ims_admin_agency"
    assert config.source == path


def test_env_variable_beats_cwd_file(tmp_path: Path) -> None:
    """$IMS_MIGRATE_CONFIG wins over ./ims-migrate.toml."""
    write(tmp_path, '[defaults]\nagency_name = "from-cwd"\n')
    write(tmp_path, '[defaults]\nagency_name = "from-env"\n', "env.toml")
    config = load_config(None, {"IMS_MIGRATE_CONFIG": "env.toml"}, tmp_path)
    assert config.agency_name == "from-env"


def test_config_option_beats_env_variable(tmp_path: Path) -> None:
    """--config wins over $IMS_MIGRATE_CONFIG."""
    write(tmp_path, '[defaults]\nagency_name = "from-env"\n', "env.toml")
    write(tmp_path, '[defaults]\nagency_name = "from-option"\n', "option.toml")
    config = load_config(Path("option.toml"), {"IMS_MIGRATE_CONFIG": "env.toml"}, tmp_path)
    assert config.agency_name == "from-option"


def test_empty_env_variable_is_ignored(tmp_path: Path) -> None:
    """An empty $IMS_MIGRATE_CONFIG counts as unset."""
    assert load_config(None, {"IMS_MIGRATE_CONFIG": " "}, tmp_path) == Config()


def test_missing_config_option_file_is_an_error(tmp_path: Path) -> None:
    """A --config file that does not exist is named, with how it was given."""
    with pytest.raises(ConfigError, match=r"^nope\.toml: cannot read the config file given with"):
        load_config(Path("nope.toml"), {}, tmp_path)


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    """A file named by $IMS_MIGRATE_CONFIG that does not exist says so."""
    with pytest.raises(ConfigError, match=r"named by \$IMS_MIGRATE_CONFIG"):
        load_config(None, {"IMS_MIGRATE_CONFIG": "gone.toml"}, tmp_path)


def test_not_utf8_is_an_error_with_line(tmp_path: Path) -> None:
    """A config that is not UTF-8 names the line and the byte."""
    (tmp_path / "given.toml").write_bytes(b'[defaults]\nagency_name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"given\.toml:2: not UTF-8 \(byte 0xe9"):
        load_config(Path("given.toml"), {}, tmp_path)


def test_bom_is_tolerated(tmp_path: Path) -> None:
    """A UTF-8 byte order mark (Windows editors) does not break parsing."""
    (tmp_path / "given.toml").write_bytes(b'\xef\xbb\xbf[defaults]\nagency_name = "a"\n')
    assert load_config(Path("given.toml"), {}, tmp_path).agency_name == "a"


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error reads file:line:column."""
    message = error_of(tmp_path, '[defaults]\nagency_name = "x" y\n')
    assert message.startswith("given.toml:2:19: not valid TOML: ")


def test_toml_error_at_end_of_document(tmp_path: Path) -> None:
    """An error at the end of the file is still reported as TOML syntax."""
    assert "not valid TOML" in error_of(tmp_path, "[defaults]\nagency_name =")


def test_empty_file_gives_defaults_with_source(tmp_path: Path) -> None:
    """An empty file is valid TOML: defaults, with the file as source."""
    config = load_text(tmp_path, "")
    assert config.max_concurrent_copies == 5
    assert config.source == tmp_path / "given.toml"


# --- sections and keys ----------------------------------------------------------------------


def test_full_config_is_read(tmp_path: Path) -> None:
    """Every documented section and key lands in the dataclasses."""
    bundle = write(tmp_path, TEST_CA.read_text(), "ca.pem")
    config = load_text(
        tmp_path,
        """
[defaults]
agency_name = "ims_admin_agency"
max_concurrent_copies = 3

[tenants.prod]
access_key_env = "PROD_AK"
secret_key_env = "PROD_SK"
security_token_env = "PROD_TOKEN"
project_ids = { cn-north-4 = "0123456789abcdef0123456789abcdef" }

[endpoints]
ims = "http://127.0.0.1:8080/{region}"
iam = "http://127.0.0.1:8080/iam"
ca_bundle = "ca.pem"

[endpoints.ims_by_region]
cn-east-3 = "https://proxy.example.com/ims"

[limits]
cn-east-3 = 500
default = 64

[rate]
requests_per_second = 7.5
host_requests_per_second = 300

[timing]
poll_min = "2s"
poll_max = 60
settle = "1h30m"
backoff_max = 30.5
request_timeout = "10s"
job_deadline = "2h"

[retry]
fail_codes = ["IMG.0060"]

[regions]
extra = ["my-private-1"]
""",
    )
    assert config.agency_name == "ims_admin_agency"
    assert config.max_concurrent_copies == 3
    prod = config.tenant("prod")
    assert prod is not None
    assert (prod.access_key_env, prod.secret_key_env, prod.security_token_env) == (
        "PROD_AK",
        "PROD_SK",
        "PROD_TOKEN",
    )
    assert dict(prod.project_ids) == {"cn-north-4": "0123456789abcdef0123456789abcdef"}
    assert config.endpoints.ims_for("cn-north-4") == "http://127.0.0.1:8080/cn-north-4"
    assert config.endpoints.ims_for("cn-east-3") == "https://proxy.example.com/ims"
    assert config.endpoints.iam == "http://127.0.0.1:8080/iam"
    assert config.endpoints.ca_bundle == str(bundle)
    assert config.size_limit_gib("cn-east-3") == 500
    assert config.size_limit_gib("cn-north-4") == 300
    assert config.size_limit_gib("ap-southeast-1") == 64
    assert config.requests_per_second == 7.5
    assert config.host_requests_per_second == 300.0
    assert config.timing.poll_min == 2.0
    assert config.timing.poll_max == 60.0
    assert config.timing.settle == 5400.0
    assert config.timing.backoff_max == 30.5
    assert config.timing.request_timeout == 10.0
    assert config.timing.job_deadline == 7200.0
    assert config.retry_fail_codes == ("IMG.0060",)
    assert config.knows_region("my-private-1")


def test_limits_merge_over_defaults(tmp_path: Path) -> None:
    """[limits] changes only the regions it names; the 300 GiB regions keep theirs."""
    config = load_text(tmp_path, "[limits]\nap-southeast-1 = 200\n")
    assert config.size_limit_gib("ap-southeast-1") == 200
    assert config.size_limit_gib("cn-south-1") == 300
    assert config.size_limit_gib("eu-west-0") == DEFAULT_LIMIT_GIB


def test_tenant_defaults_to_sdk_variable_names(tmp_path: Path) -> None:
    """A tenant section without keys uses the official SDK's variable names."""
    tenant = load_text(tmp_path, "[tenants.ops]\n").tenant("ops")
    assert tenant == TenantConfig(name="ops")


def test_default_tenant_exists_without_config(tmp_path: Path) -> None:
    """The default tenant needs no section; other tenants do."""
    config = load_config(None, {}, tmp_path)
    assert config.tenant("default") == TenantConfig(name="default")
    assert config.tenant("prod") is None


def test_unknown_section_is_named_with_suggestion(tmp_path: Path) -> None:
    """A misspelt section is an error that suggests the right one."""
    message = error_of(tmp_path, "[timings]\npoll_min = 1\n")
    assert message.startswith("given.toml: [timings]: unknown section (did you mean timing?")


def test_unknown_key_is_named_with_suggestion(tmp_path: Path) -> None:
    """A misspelt key is an error naming section and key, with the known keys."""
    message = error_of(tmp_path, '[defaults]\nagency = "x"\n')
    assert message == (
        "given.toml: [defaults] agency: unknown key (did you mean agency_name? "
        "known keys: agency_name, max_concurrent_copies)"
    )


def test_top_level_key_points_to_its_section(tmp_path: Path) -> None:
    """A key written above every section is told which section it belongs to."""
    message = error_of(tmp_path, 'agency_name = "x"\n')
    assert "did you mean [defaults] agency_name?" in message


def test_unknown_tenant_key_is_an_error(tmp_path: Path) -> None:
    """Typos inside a tenant section are caught too."""
    message = error_of(tmp_path, '[tenants.prod]\naccess_key = "PROD_AK"\n')
    assert message.startswith("given.toml: [tenants.prod] access_key: unknown key")


def test_unknown_timing_key_is_an_error(tmp_path: Path) -> None:
    """[timing] accepts only the documented keys."""
    assert "[timing] poll: unknown key" in error_of(tmp_path, "[timing]\npoll = 5\n")


@pytest.mark.parametrize("value", ["0", "6", "2.5", '"3"', "true"])
def test_max_concurrent_copies_must_be_1_to_5(tmp_path: Path, value: str) -> None:
    """The cap is a whole number from 1 to 5, the cloud's own limit."""
    message = error_of(tmp_path, f"[defaults]\nmax_concurrent_copies = {value}\n")
    assert message.startswith("given.toml: [defaults] max_concurrent_copies: ")


def test_empty_agency_name_is_an_error(tmp_path: Path) -> None:
    """An empty string is not silently taken as "no agency"."""
    message = error_of(tmp_path, '[defaults]\nagency_name = ""\n')
    assert (
        message == "given.toml: [defaults] agency_name: is empty (give a value or remove the line)"
    )


def test_env_name_must_be_a_variable_name_and_is_not_echoed(tmp_path: Path) -> None:
    """A secret pasted where a variable name belongs is refused without being repeated."""
    message = error_of(tmp_path, '[tenants.prod]\nsecret_key_env = "s3cr3t/KEY+value"\n')
    assert "s3cr3t" not in message
    assert "[tenants.prod] secret_key_env: is not an environment variable name" in message


def test_tenant_name_must_be_usable(tmp_path: Path) -> None:
    """A tenant name with a slash would break item keys: refused."""
    message = error_of(tmp_path, '[tenants."a/b"]\n')
    assert "[tenants] a/b: is not a usable tenant name" in message


def test_section_must_be_a_table(tmp_path: Path) -> None:
    """`defaults = 3` is not a section."""
    assert "defaults: must be a section" in error_of(tmp_path, "defaults = 3\n")


def test_ims_template_needs_region_placeholder(tmp_path: Path) -> None:
    """The IMS endpoint template must contain {region}."""
    message = error_of(tmp_path, '[endpoints]\nims = "https://ims.example.com"\n')
    assert message.startswith("given.toml: [endpoints] ims: ")
    assert "must contain {region}" in message


def test_ims_template_rejects_other_placeholders(tmp_path: Path) -> None:
    """A placeholder other than {region} would crash later: refused now."""
    message = error_of(tmp_path, '[endpoints]\nims = "https://{service}.{region}.example.com"\n')
    assert "no placeholder other than {region}" in message


def test_iam_must_be_http_url(tmp_path: Path) -> None:
    """IAM endpoint must be an http(s) URL."""
    assert "[endpoints] iam: " in error_of(tmp_path, '[endpoints]\niam = "iam.example.com"\n')


def test_a_ca_bundle_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    """A ca_bundle file that TLS cannot load: named as a config error, not a traceback later."""
    write(tmp_path, "not a certificate\n", "ca.pem")
    message = error_of(tmp_path, '[endpoints]\nca_bundle = "ca.pem"\n')
    assert "[endpoints] ca_bundle: 'ca.pem' is not a PEM bundle of CA certificates" in message


def test_a_vanishing_request_budget_is_a_config_error(tmp_path: Path) -> None:
    """requests_per_second = 1e-300 would hang the run silently: refused."""
    message = error_of(tmp_path, "[rate]\nrequests_per_second = 1e-300\n")
    assert "[rate] requests_per_second: 1e-300 is too low: at least 0.01" in message


def test_missing_ca_bundle_is_an_error(tmp_path: Path) -> None:
    """A CA bundle that does not exist is caught before any call."""
    message = error_of(tmp_path, '[endpoints]\nca_bundle = "missing.pem"\n')
    assert "[endpoints] ca_bundle: 'missing.pem' is not a file" in message


def test_endpoint_override_for_unknown_region_is_an_error(tmp_path: Path) -> None:
    """An override for a misspelt region is named, with a suggestion."""
    message = error_of(tmp_path, '[endpoints.ims_by_region]\ncn-nort-4 = "https://x.example"\n')
    assert message.startswith("given.toml: [endpoints.ims_by_region] cn-nort-4: unknown region")
    assert "did you mean cn-north-4?" in message


def test_limit_for_extra_region_is_accepted(tmp_path: Path) -> None:
    """A region added with [regions] extra can have its own limit."""
    config = load_text(tmp_path, '[regions]\nextra = ["lab-1"]\n[limits]\nlab-1 = 10\n')
    assert config.size_limit_gib("lab-1") == 10


def test_limit_for_unknown_region_is_an_error(tmp_path: Path) -> None:
    """A limit for a region nobody knows is a typo, not a setting."""
    assert "[limits] lab-1: unknown region" in error_of(tmp_path, "[limits]\nlab-1 = 10\n")


@pytest.mark.parametrize("value", ["0", "-1", "1.5", '"300"'])
def test_limit_must_be_positive_whole_number(tmp_path: Path, value: str) -> None:
    """Limits are whole GiB, more than zero."""
    assert "[limits] cn-north-4: " in error_of(tmp_path, f"[limits]\ncn-north-4 = {value}\n")


def test_bad_extra_region_id_is_an_error(tmp_path: Path) -> None:
    """Region ids in [regions] extra look like region ids."""
    assert "[regions] extra: 'Lab 1' is not a region id" in error_of(
        tmp_path, '[regions]\nextra = ["Lab 1"]\n'
    )


@pytest.mark.parametrize("value", ["0", "-3", '"soon"', "[1]"])
def test_timing_values_must_be_positive_durations(tmp_path: Path, value: str) -> None:
    """Timing values are positive numbers or DURATION strings."""
    assert "[timing] settle: " in error_of(tmp_path, f"[timing]\nsettle = {value}\n")


def test_poll_min_above_poll_max_is_an_error(tmp_path: Path) -> None:
    """poll_min must not exceed poll_max, including the default poll_max."""
    message = error_of(tmp_path, '[timing]\npoll_min = "10m"\n')
    assert message.startswith("given.toml: [timing] poll_min: 600 s is more than poll_max (300 s)")


def test_rate_must_be_positive(tmp_path: Path) -> None:
    """requests_per_second must be more than zero."""
    assert "[rate] requests_per_second: " in error_of(tmp_path, "[rate]\nrequests_per_second = 0\n")


def test_fail_codes_must_be_strings(tmp_path: Path) -> None:
    """[retry] fail_codes is a list of strings."""
    assert "[retry] fail_codes: every element must be a string" in error_of(
        tmp_path, "[retry]\nfail_codes = [60]\n"
    )


def test_empty_fail_codes_turn_off_automatic_retries(tmp_path: Path) -> None:
    """An empty list is kept as such (no automatic retry), not replaced by the default."""
    assert load_text(tmp_path, "[retry]\nfail_codes = []\n").retry_fail_codes == ()


def test_project_ids_must_be_strings(tmp_path: Path) -> None:
    """Project ids are strings, checked per project name."""
    message = error_of(tmp_path, "[tenants.prod.project_ids]\ncn-north-4 = 12\n")
    assert message.startswith("given.toml: [tenants.prod.project_ids] cn-north-4: must be a string")


# --- credentials ----------------------------------------------------------------------------


def test_credentials_come_from_named_variables() -> None:
    """AK, SK and the optional token are read from the tenant's variables."""
    tenant = TenantConfig(name="prod", access_key_env="P_AK", secret_key_env="P_SK")
    creds = resolve_credentials(tenant, {"P_AK": "AK1", "P_SK": "SK1"})
    assert creds == Credentials("AK1", "SK1", None)


def test_security_token_is_read_when_set() -> None:
    """A temporary key's token comes with it."""
    env = {
        "HUAWEICLOUD_SDK_AK": "a",
        "HUAWEICLOUD_SDK_SK": "b",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": "t",
    }
    assert resolve_credentials(TenantConfig(name="default"), env).security_token == "t"


def test_missing_secret_names_tenant_and_variable() -> None:
    """A missing SK names the tenant and the exact variable, never the AK's value."""
    tenant = TenantConfig(name="prod", access_key_env="P_AK", secret_key_env="P_SK")
    with pytest.raises(ConfigError) as caught:
        resolve_credentials(tenant, {"P_AK": "AKVALUE123"})
    message = str(caught.value)
    assert message.startswith('tenant "prod": P_SK is not set')
    assert "AKVALUE123" not in message


def test_both_keys_missing_are_both_named() -> None:
    """With neither variable set, both names are given."""
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK are not set"):
        resolve_credentials(TenantConfig(name="default"), {})


def test_blank_key_counts_as_missing() -> None:
    """A variable set to spaces is as good as unset."""
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_AK is not set"):
        resolve_credentials(
            TenantConfig(name="default"), {"HUAWEICLOUD_SDK_AK": " ", "HUAWEICLOUD_SDK_SK": "s"}
        )


def test_fingerprint_is_short_and_hides_the_secret() -> None:
    """The fingerprint is 16 hex characters and contains no part of the keys."""
    fingerprint = credential_fingerprint(Credentials("AKEXAMPLE", "SKEXAMPLESECRET"))
    assert len(fingerprint) == 16
    assert int(fingerprint, 16) >= 0
    assert "AKEX" not in fingerprint


def test_fingerprint_changes_with_any_part() -> None:
    """A new SK or a new token gives a new fingerprint (so a block is lifted)."""
    base = credential_fingerprint(Credentials("AK", "SK"))
    assert base == credential_fingerprint(Credentials("AK", "SK"))
    assert base != credential_fingerprint(Credentials("AK", "SK2"))
    assert base != credential_fingerprint(Credentials("AK", "SK", "token"))
    assert base != credential_fingerprint(Credentials("AK2", "SK"))


# --- [scheduling] -----------------------------------------------------------------------------


def test_scheduling_defaults_to_the_good_strategy(tmp_path: Path) -> None:
    """Without [scheduling]: largest first, adaptive polling."""
    config = load_text(tmp_path, "")
    assert config.scheduling.order is Order.LARGEST
    assert config.scheduling.polling is Polling.ADAPTIVE


def test_scheduling_takes_the_naive_strategy_for_benchmarks(tmp_path: Path) -> None:
    """order = "list" and polling = "fixed" are read as given."""
    config = load_text(tmp_path, '[scheduling]\norder = "list"\npolling = "fixed"\n')
    assert config.scheduling.order is Order.LIST
    assert config.scheduling.polling is Polling.FIXED


def test_unknown_scheduling_value_is_named(tmp_path: Path) -> None:
    """A value that is not one of the choices says which ones exist."""
    message = error_of(tmp_path, '[scheduling]\npolling = "often"\n')
    assert "[scheduling] polling" in message
    assert "adaptive, fixed" in message
