"""Bad secrets are input errors: a key with a control character or of absurd length is a config
error (exit 2) named by its variable, never shown, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.logs import mask_secrets

GOOD_AK = "AKGOOD00000000000000"
GOOD_SK = "SK" + "s" * 38

BAD = {
    "AK with a control character": ("HUAWEICLOUD_SDK_AK", "AKBAD\x0100000000000000"),
    "SK with a newline inside": ("HUAWEICLOUD_SDK_SK", "SKBAD\nsecretsecretsecret"),
    "SK of absurd length": ("HUAWEICLOUD_SDK_SK", "S" * 5000),
    "token with a control character": ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "tok\x7fen"),
}


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_secret_is_a_config_error_that_does_not_show_it(
    tmp_path: Path, case: str, command: str
) -> None:
    """Exit 2 naming the variable; the value appears nowhere in the output."""
    listed = tmp_path / "l.csv"
    listed.write_text("image_id,source_region,target_region\nabc,cn-north-4,cn-east-3\n")
    name, value = BAD[case]
    environ = {"HUAWEICLOUD_SDK_AK": GOOD_AK, "HUAWEICLOUD_SDK_SK": GOOD_SK, name: value}
    out, err = io.StringIO(), io.StringIO()
    code = main([command, str(listed)], environ, out, err)
    said = out.getvalue() + err.getvalue()
    assert code == 2, said
    assert name in said
    assert value.strip() not in said
    assert "Traceback" not in said


def test_the_event_log_masks_keys_that_name_a_secret_whatever_their_case() -> None:
    """Every event goes through mask_secrets: a key naming a secret (any case, seen before or
    not) is written as ***; other keys are left as they are."""
    for _ in range(2):  # the second time, each key's verdict is remembered
        event = {"Secret_Key": "s1", "SK": "s2", "authorization": "s3", "detail": "kept"}
        assert mask_secrets(None, "info", event) == {
            "Secret_Key": "***",
            "SK": "***",
            "authorization": "***",
            "detail": "kept",
        }
