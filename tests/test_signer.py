"""The SDK-HMAC-SHA256 signer: the documented vectors, and agreement with the official SDK."""

from __future__ import annotations

import hashlib
import hmac
import warnings
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.credentials import Credentials
from orchestrator.ims.signer import (
    _sign_each_step,
    canonical_query,
    canonical_request,
    compute_signature,
    parse_authorization,
    sign,
    signature,
    signed_header_names,
)

with warnings.catch_warnings():  # the SDK is a test oracle; its import-time noise is not ours
    warnings.simplefilter("ignore", DeprecationWarning)
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

DATE = "20240101T000000Z"
AK = "AKEXAMPLE0000000"
SK = "SKEXAMPLE00000000000000000000000000000000"
IMS_HOST = "ims.cn-north-4.myhuaweicloud.com"
PROJECT_ID = "0123456789abcdef0123456789abcdef"


# -- the three vectors of docs/ims-api.md §6.3 --------------------------------------------------

VECTOR_A_CANONICAL = (
    "GET\n"
    "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/\n"
    "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0\n"
    "content-type:application/json\n"
    "host:service.region.example.com\n"
    "x-sdk-date:20191115T033655Z\n"
    "\n"
    "content-type;host;x-sdk-date\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)


def test_vector_a_canonical_request_is_the_documented_text() -> None:
    """The official doc vector: canonical request text and its hash as documented."""
    headers = {
        "Content-Type": "application/json",
        "Host": "service.region.example.com",
        "X-Sdk-Date": "20191115T033655Z",
    }
    query = canonical_query([("marker", "13551d6b-755d-4757-b956-536f674975c0"), ("limit", "2")])
    text = canonical_request(
        "GET",
        "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        query,
        headers,
        signed_header_names(headers),
        b"",
    )
    assert text == VECTOR_A_CANONICAL
    assert (
        hashlib.sha256(text.encode()).hexdigest()
        == "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
    )


def test_vector_a_signature() -> None:
    """The official doc vector signs to the documented Authorization header."""
    credentials = Credentials("QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc")
    headers = sign(
        credentials,
        "GET",
        "service.region.example.com",
        "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
        {"Content-Type": "application/json"},
        b"",
        "20191115T033655Z",
    )
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, "
        "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
    )


def test_vector_b_ims_copy_signature() -> None:
    """The IMS copy POST vector (body hashed as sent, X-Project-Id signed)."""
    body = (
        b'{"name": "copy-img", "description": "", "region": "cn-east-3", '
        b'"project_name": "cn-east-3", "agency_name": "ims_admin_agency"}'
    )
    assert (
        hashlib.sha256(body).hexdigest()
        == "06c1a0b536f6ebcb83d03f656b471feeb5ec6c78a62ed7da91d62644b1daf1b3"
    )
    headers = sign(
        Credentials(AK, SK),
        "POST",
        IMS_HOST,
        "/v1/cloudimages/1f8bbc1e-5a1b-4f43-9a3c-6a9a1d1c2b3e/cross_region_copy",
        "",
        {"Content-Type": "application/json;charset=UTF-8", "X-Project-Id": PROJECT_ID},
        body,
        DATE,
    )
    auth = parse_authorization(headers["Authorization"])
    assert auth is not None
    assert auth.signed_headers == ("content-type", "host", "x-project-id", "x-sdk-date")
    assert auth.signature == "aec3e0e46831b2313eaefde4e820268843e8bcb42ad0b67edccb2a944d278a64"


def test_vector_c_image_listing_signature() -> None:
    """The GET /v2/cloudimages vector: canonical query and signature."""
    query = canonical_query([("__imagetype", "private"), ("limit", "100"), ("status", "active")])
    assert query == "__imagetype=private&limit=100&status=active"
    headers = sign(
        Credentials(AK, SK),
        "GET",
        IMS_HOST,
        "/v2/cloudimages",
        query,
        {"X-Project-Id": PROJECT_ID},
        b"",
        DATE,
    )
    auth = parse_authorization(headers["Authorization"])
    assert auth is not None
    assert auth.signed_headers == ("host", "x-project-id", "x-sdk-date")
    assert auth.signature == "f26c59346456b7fb1fcaab90e19dc6e6a186531d68c602ed1c4025e510b24a5c"


# -- agreement with the official SDK -------------------------------------------------------------


@dataclass(frozen=True)
class _SdkCredentials:
    ak: str
    sk: str


def _sdk_sign(
    credentials: Credentials,
    method: str,
    host: str,
    path: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    date: str,
) -> tuple[str, str]:
    """(Authorization, request URI) as huaweicloudsdkcore's Signer makes them."""
    header_params = dict(headers)
    header_params["X-Sdk-Date"] = date  # given, so the SDK never calls datetime.utcnow()
    if credentials.security_token:  # the SDK's credentials add it before signing
        header_params["X-Security-Token"] = credentials.security_token
    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=path,
        query_params=list(params),
        header_params=header_params,
        body=body,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        Signer(_SdkCredentials(credentials.access_key, credentials.secret_key)).sign(request)
    return request.header_params["Authorization"], request.uri


# Text with the characters that trip signers up: space, '%', '/', '~', '+', '=', '&', unicode.
_ODD = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(" %/~+=&?#;:@!$'()*,.-_\u00e9\u4e2d\U0001f600")),
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    ),
    max_size=12,
)
_SEGMENT = st.one_of(_ODD.filter(lambda s: "/" not in s), st.sampled_from(["%2F", "%20", "a%7Eb"]))
_PATHS = st.builds(
    lambda segments, slash: "/" + "/".join(segments) + ("/" if slash else ""),
    st.lists(_SEGMENT, min_size=1, max_size=5),
    st.booleans(),
)
_KEYS = st.one_of(st.sampled_from(["limit", "marker", "name", "__imagetype", "a.", "a/"]), _ODD)
_PARAMS = st.lists(st.tuples(_KEYS, _ODD), max_size=8).flatmap(
    # sometimes repeat a key with other values, as list-valued SDK params are
    lambda pairs: (
        st.just(pairs + [(k, v + "~x") for k, v in pairs[:2]]) if pairs else st.just(pairs)
    )
)
_RESERVED = {"host", "x-sdk-date", "authorization", "x-sdk-content-sha256", "x-security-token"}
_HEADER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,15}", fullmatch=True).filter(
    lambda name: name.lower() not in _RESERVED and name.lower() != "content-type"
)
_HEADER_VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20
).map(lambda v: f"  {v} " if v.startswith("p") else v)
_HEADERS = st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=6).map(
    # header names are case-insensitive: keep one spelling of each
    lambda headers: dict({k.lower(): (k, v) for k, v in headers.items()}.values())
)
# Only JSON content types: for any other the SDK switches to an unsigned payload, which the IMS
# client never sends (see the test below that pins this).
_CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "application/json;charset=UTF-8", "application/bson"]
)
_HOSTS = st.sampled_from(
    [IMS_HOST, "127.0.0.1:8080", "iam.myhuaweicloud.com", "[::1]:9443", "Example.COM"]
)
_CREDENTIALS = st.builds(
    Credentials,
    access_key=st.from_regex(r"[A-Z0-9]{8,20}", fullmatch=True),
    secret_key=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    security_token=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9+/=]{10,60}", fullmatch=True)),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    credentials=_CREDENTIALS,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "post"]),
    host=_HOSTS,
    path=_PATHS,
    params=_PARAMS,
    headers=_HEADERS,
    content_type=_CONTENT_TYPES,
    body=st.one_of(st.just(b""), st.binary(max_size=64), _ODD.map(str.encode)),
)
def test_signatures_match_the_official_sdk(
    credentials: Credentials,
    method: str,
    host: str,
    path: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    content_type: str | None,
    body: bytes,
) -> None:
    """For any request, our Authorization header and wire query equal the SDK signer's."""
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    query = canonical_query(params)
    ours = sign(credentials, method, host, path, query, headers, body, DATE)
    sdk_authorization, sdk_uri = _sdk_sign(
        credentials, method, host, path, params, headers, body, DATE
    )
    assert ours["Authorization"] == sdk_authorization
    assert sdk_uri == (f"{path}?{query}" if query else path)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    credentials=_CREDENTIALS,
    host=_HOSTS,
    headers=_HEADERS,
    content_type=_CONTENT_TYPES,
    requests=st.lists(
        st.tuples(
            st.sampled_from(["GET", "POST", "DELETE"]),
            _PATHS,
            st.one_of(st.just(b""), st.binary(max_size=32)),
            st.sampled_from([DATE, "20240101T000001Z", "20351231T235959Z"]),
        ),
        min_size=2,
        max_size=4,
    ),
)
def test_requests_of_one_shape_match_the_official_sdk(
    credentials: Credentials,
    host: str,
    headers: dict[str, str],
    content_type: str | None,
    requests: list[tuple[str, str, bytes, str]],
) -> None:
    """Requests with the same host, token and headers (one remembered shape) at other dates,
    paths and bodies: each signed as the SDK signs it, its headers sent as each step makes
    them, in the same order."""
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    for method, path, body, date in requests:
        ours = sign(credentials, method, host, path, "", headers, body, date)
        sdk_authorization, _ = _sdk_sign(credentials, method, host, path, [], headers, body, date)
        assert ours["Authorization"] == sdk_authorization
        plain = _sign_each_step(credentials, method, host, path, "", headers, body, date)
        assert list(ours.items()) == list(plain.items())


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Sdk-Date": "19990101T000000Z", "X-Project-Id": "p"},  # replaced, in its place
        {"x-sdk-date": "19990101T000000Z"},  # another spelling: both sent, the date signed
        {"X-Sdk-Date": "a", "x-sdk-date": "b"},  # the later spelling is the one signed
        {"host": "other.example.com", "Authorization": "old"},
        {"X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD"},
        {"X-Note": "\x00date\x00"},  # the shape's own mark in a value: each step instead
        {"X\x00date\x00": "1"},
    ],
)
def test_remembered_shapes_sign_as_each_step(headers: dict[str, str]) -> None:
    """Odd headers (the reserved names, other spellings, the mark itself): the same headers,
    in the same order, and the same signature as each step computes, twice (the second from
    the remembered shape) and at two dates."""
    credentials = Credentials(AK, SK, "TOKEN")
    for date in (DATE, "20240101T000001Z", DATE):
        ours = sign(credentials, "POST", IMS_HOST, "/v1/x", "a=1", headers, b"{}", date)
        plain = _sign_each_step(credentials, "POST", IMS_HOST, "/v1/x", "a=1", headers, b"{}", date)
        assert list(ours.items()) == list(plain.items())


def test_canonical_query_sorts_before_encoding_like_the_sdk() -> None:
    """'a.' sorts before 'a/' although its encoding 'a%2F' sorts first (the SDK sorts raw)."""
    params = [("a/", "2"), ("a.", "1"), ("k", "b b"), ("k", "a~")]
    assert canonical_query(params) == "a.=1&a%2F=2&k=a~&k=b%20b"
    _, sdk_uri = _sdk_sign(Credentials(AK, SK), "GET", IMS_HOST, "/x", params, {}, b"", DATE)
    assert sdk_uri == "/x?" + canonical_query(params)


def test_non_json_content_type_is_outside_what_the_signer_reproduces() -> None:
    """The SDK signs other content types as UNSIGNED-PAYLOAD; our signer does not (IMS is JSON)."""
    headers = {"Content-Type": "text/plain"}
    ours = sign(Credentials(AK, SK), "PUT", IMS_HOST, "/x", "", headers, b"data", DATE)
    sdk, _ = _sdk_sign(Credentials(AK, SK), "PUT", IMS_HOST, "/x", [], headers, b"data", DATE)
    assert ours["Authorization"] != sdk
    assert "X-Sdk-Content-Sha256" not in ours


# -- sign() output, parse_authorization, Credentials ---------------------------------------------


def test_sign_adds_host_date_and_security_token() -> None:
    """sign() returns the headers to send, including the STS token, which is signed."""
    out = sign(Credentials(AK, SK, "TOKEN123"), "GET", IMS_HOST, "/v2/x", "", {}, b"", DATE)
    assert out["Host"] == IMS_HOST
    assert out["X-Sdk-Date"] == DATE
    assert out["X-Security-Token"] == "TOKEN123"
    auth = parse_authorization(out["Authorization"])
    assert auth is not None
    assert "x-security-token" in auth.signed_headers


def test_headers_with_underscore_are_sent_but_not_signed() -> None:
    """A header name with '_' is left out of SignedHeaders, as the gateway expects."""
    out = sign(Credentials(AK, SK), "GET", IMS_HOST, "/", "", {"X_Trace": "1"}, b"", DATE)
    auth = parse_authorization(out["Authorization"])
    assert auth is not None
    assert out["X_Trace"] == "1"
    assert "x_trace" not in auth.signed_headers


def test_compute_signature_verifies_what_sign_produced() -> None:
    """A verifier recomputing the signature from the sent headers gets the same value."""
    body = b'{"a": 1}'
    out = sign(
        Credentials(AK, SK),
        "POST",
        IMS_HOST,
        "/v1/p",
        "q=1",
        {"Content-Type": "application/json"},
        body,
        DATE,
    )
    auth = parse_authorization(out["Authorization"])
    assert auth is not None
    assert auth.access_key == AK
    again = compute_signature(SK, "POST", "/v1/p", "q=1", out, auth.signed_headers, body)
    assert again == auth.signature
    tampered = compute_signature(SK, "POST", "/v1/p", "q=2", out, auth.signed_headers, body)
    assert tampered != auth.signature


def test_parse_authorization_reads_the_three_parts() -> None:
    """The header the SDK writes parses into access key, signed headers and signature."""
    auth = parse_authorization(
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=abc123"
    )
    assert auth is not None
    assert auth.access_key == "AK1"
    assert auth.signed_headers == ("host", "x-sdk-date")
    assert auth.signature == "abc123"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer abc",
        "SDK-HMAC-SM3 Access=AK1, SignedHeaders=host, Signature=abc",
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host",
        "SDK-HMAC-SHA256 Access=AK1, garbage, Signature=abc",
        "SDK-HMAC-SHA256",
    ],
)
def test_parse_authorization_rejects_malformed_values(value: str) -> None:
    """Anything but a complete SDK-HMAC-SHA256 header parses to None."""
    assert parse_authorization(value) is None


def test_credentials_repr_never_shows_the_secret() -> None:
    """repr/str of credentials (as a log or traceback would show them) hide the secret key."""
    credentials = Credentials("AKVERYSECRETLOOKING", "TOPSECRETSECRETKEY", "STSTOKENVALUE")
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert "TOPSECRETSECRETKEY" not in text
        assert "STSTOKENVALUE" not in text
        assert "AKVERYSECRETLOOKING" not in text


@settings(max_examples=300, deadline=None, database=None)
@given(
    secret=st.text(max_size=80)
    | st.sampled_from(["", "k", "K" * 63, "K" * 64, "K" * 65, "K" * 200, "\u00e9" * 40]),
    text=st.text(max_size=300),
)
def test_the_signature_is_hmac_sha256_for_any_key(secret: str, text: str) -> None:
    """The HMAC made from each key's padded blocks (kept per key) is hmac.digest's, for keys
    shorter, as long as and longer than SHA-256's block, each asked for twice."""
    try:
        key, message = secret.encode("utf-8"), text.encode("utf-8")
    except UnicodeEncodeError:
        return
    expected = hmac.digest(key, message, "sha256").hex()
    assert signature(secret, text) == expected
    assert signature(secret, text) == expected
