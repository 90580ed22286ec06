"""Error bodies and the classification table (design §5): what each cloud answer means."""

from __future__ import annotations

import pytest

from orchestrator.core.advice import UPDATE, refused_for
from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.errors import classify, parse_error_body

# -- parse_error_body ----------------------------------------------------------------------------


def test_ims_error_body_shape() -> None:
    """IMS's own shape: {"error": {"code", "message"}}."""
    body = b'{"error": {"message": "The imagetype is invalid.", "code": "IMG.0024"}}'
    assert parse_error_body(body) == ("IMG.0024", "The imagetype is invalid.", None)


def test_gateway_error_body_shape() -> None:
    """The API gateway's shape: {"error_code", "error_msg", "request_id"}."""
    body = (
        '{"error_msg":"The throttling threshold has been reached: policy user over ratelimit,'
        'limit:XX,time:1 minute","error_code":"APIGW.0308",'
        '"request_id":"c50619de20b0e70590f57a99dbed044f"}'
    )
    code, message, request_id = parse_error_body(body)
    assert code == "APIGW.0308"
    assert message is not None
    assert message.startswith("The throttling threshold has been reached")
    assert request_id == "c50619de20b0e70590f57a99dbed044f"


def test_camel_case_and_nested_shapes_as_the_sdk_reads_them() -> None:
    """Like the SDK: errorCode/errorMsg, and a code/message pair nested anywhere."""
    assert parse_error_body(b'{"errorCode": "X.1", "errorMsg": "m"}') == ("X.1", "m", None)
    nested = b'{"outer": {"inner": {"error_code": "IMG.0060", "error_msg": "busy"}}}'
    assert parse_error_body(nested) == ("IMG.0060", "busy", None)


def test_message_without_code_text_is_kept_as_none() -> None:
    """A code with a non-string message yields the code and no message."""
    assert parse_error_body(b'{"error": {"code": "IMG.0001", "message": 42}}') == (
        "IMG.0001",
        None,
        None,
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"upstream connect error",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b'{"error": "flat string"}',
        b'{"code": 500, "message": "numeric code"}',
        "not json at all",
    ],
)
def test_bodies_that_say_nothing_parse_to_nones(raw: bytes | str) -> None:
    """Non-JSON, non-object or code-less bodies never raise: they say nothing."""
    assert parse_error_body(raw) == (None, None, None)


# -- classify ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "mutating", "kind"),
    [
        # 5xx: on the copy POST the outcome is unknown; on a read it is transient
        (500, None, True, ErrorKind.UNKNOWN),
        (502, "APIGW.0201", True, ErrorKind.UNKNOWN),
        (503, None, True, ErrorKind.UNKNOWN),
        (500, None, False, ErrorKind.TRANSIENT),
        (504, "APIGW.0201", False, ErrorKind.TRANSIENT),
        (503, "APIGW.0613", False, ErrorKind.TRANSIENT),
        # throttling: refused before the service saw it, so transient even on the POST
        (429, None, True, ErrorKind.TRANSIENT),
        (429, "APIGW.0308", True, ErrorKind.TRANSIENT),
        (429, "APIGW.0308", False, ErrorKind.TRANSIENT),
        (400, "APIG.0308", True, ErrorKind.TRANSIENT),
        # IMS flow control: the tenant has too many tasks
        (400, "IMG.0060", True, ErrorKind.BACK_PRESSURE),
        # authentication and authorisation
        (401, None, False, ErrorKind.AUTH),
        (403, None, True, ErrorKind.AUTH),
        (401, "APIGW.0301", True, ErrorKind.AUTH),
        (403, "APIGW.0302", False, ErrorKind.AUTH),
        (401, "APIGW.0303", False, ErrorKind.AUTH),
        (403, "APIGW.0306", False, ErrorKind.AUTH),
        (401, "APIGW.0307", True, ErrorKind.AUTH),
        # the target's private image quota
        (400, "IMG.0015", True, ErrorKind.QUOTA),
        # unknown ids
        (404, None, False, ErrorKind.NOT_FOUND),
        (404, "APIGW.0101", False, ErrorKind.NOT_FOUND),
        (400, "IMG.0027", False, ErrorKind.NOT_FOUND),
        (400, "IMG.0144", True, ErrorKind.NOT_FOUND),
        # any other refusal is permanent for the item
        (400, "IMG.0003", True, ErrorKind.PERMANENT),
        (400, "IMG.0167", True, ErrorKind.PERMANENT),
        (400, "IMG.0130", True, ErrorKind.PERMANENT),
        (400, None, False, ErrorKind.PERMANENT),
        (413, "APIGW.0201", True, ErrorKind.PERMANENT),
    ],
)
def test_classification_table(
    status: int, code: str | None, mutating: bool, kind: ErrorKind
) -> None:
    """Each row of the design's error table maps to its class."""
    error = classify(status, code, "message", mutating=mutating)
    assert error.kind is kind
    assert error.status == status
    assert error.code == code


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("APIGW.0301", ("access key", "secret key")),
        ("APIGW.0302", ("permission",)),
        ("APIGW.0303", ("clock", "NTP")),
        ("APIGW.0307", ("token", "expired")),
    ],
)
def test_auth_errors_say_what_to_fix(code: str, words: tuple[str, ...]) -> None:
    """AUTH errors carry advice: 0303 is named as clock skew, 0307 as an expired token."""
    error = classify(401, code, "Incorrect IAM authentication information", mutating=False)
    assert error.kind is ErrorKind.AUTH
    for word in words:
        assert word in error.message
    assert error.message.startswith("Incorrect IAM authentication information")


def test_message_falls_back_to_the_status() -> None:
    """Without a message in the body, the message names the HTTP status, and the error's text
    says it once (not "HTTP 502 HTTP 502")."""
    error = classify(502, None, None, mutating=False)
    assert error.message == "HTTP 502"
    assert str(error) == "HTTP 502"


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (400, None, "HTTP 400"),
        (400, "IMG.0001", "HTTP 400 IMG.0001"),
        (500, None, "HTTP 500 boom"),
    ],
)
def test_the_status_is_said_once(status: int, code: str | None, text: str) -> None:
    """A body without a message, with or without a code; a message of its own keeps it."""
    message = "boom" if text.endswith("boom") else None
    assert str(classify(status, code, message, mutating=False)) == text


def test_a_refusal_without_a_message_says_the_status_once_then_the_advice() -> None:
    """A bare 403 still carries what to fix, after the status said once."""
    text = str(classify(403, None, None, mutating=False))
    assert text.startswith("HTTP 403 (")
    assert text.count("HTTP 403") == 1


def test_retry_after_and_request_id_are_carried() -> None:
    """Retry-After and the request id travel with the error for backoff and support tickets."""
    error = classify(
        429, "APIGW.0308", "slow down", mutating=True, retry_after=7.0, request_id="r1"
    )
    assert error.retry_after == 7.0
    assert error.request_id == "r1"
    assert str(error) == "HTTP 429 APIGW.0308: slow down"


def test_classified_errors_are_cloud_errors() -> None:
    """What classify returns is the seam's one error type, ready to raise."""
    error = classify(400, "IMG.0003", "bad name", mutating=True)
    assert isinstance(error, CloudError)
    with pytest.raises(CloudError, match=r"IMG\.0003: bad name"):
        raise error


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (403, None, None),
        (403, "IMS.0211", "Policy doesn't allow it."),
        (403, "APIGW.0302", "The IAM user is not authorized to access the API."),
        (403, "APIGW.0306", "API access denied."),
    ],
)
def test_a_refusal_of_a_known_call_names_its_permission_only(
    status: int, code: str | None, message: str | None
) -> None:
    """A missing permission of a call that knows its action names that action, in place of
    the generic advice (the copy's permissions, which were not what was refused)."""
    error = refused_for(classify(status, code, message, mutating=False), UPDATE)
    text = str(error)
    assert text.endswith("(the IAM user may not make this call: grant ims:images:update, and "
                         "check the policies for a deny statement)")  # fmt: skip
    assert "ims:images:copy" not in text
    assert (error.kind, error.code, error.status) == (ErrorKind.AUTH, code, status)


@pytest.mark.parametrize(
    ("status", "code"), [(401, None), (401, "APIGW.0301"), (403, "APIGW.0303"), (404, None)]
)
def test_a_refusal_of_the_key_or_the_clock_is_left_as_it_is(status: int, code: str | None) -> None:
    """A wrong key, a skewed clock, a missing image: not a permission, the words stay."""
    error = classify(status, code, "no", mutating=False)
    assert refused_for(error, UPDATE) is error
