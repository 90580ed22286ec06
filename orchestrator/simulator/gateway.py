"""The simulator's API gateway: who signed a request, and the gateway's and IMS's error answers.

Every IMS/IAM request must carry a valid SDK-HMAC-SHA256 signature (401 ``APIGW.0301``
otherwise, ``APIGW.0303`` for an ``X-Sdk-Date`` more than ``max_skew`` off, ``APIGW.0307`` for an
expired temporary token); after ``lock_after`` failures in a row the access key is locked for
``lock_seconds`` (the world keeps that count). Gateway errors use
``{"error_msg", "error_code", "request_id"}``, IMS errors ``{"error": {"message", "code"}}``.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime

from aiohttp import web

from orchestrator.ims.signer import (
    DATE_FORMAT,
    Authorization,
    canonical_query,
    compute_signature,
    parse_authorization,
)
from orchestrator.simulator.accounts import Account
from orchestrator.simulator.images import SimError
from orchestrator.simulator.world import World

THROTTLE_MESSAGE = (
    "The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 second"
)
LOCKED_MESSAGE = (
    "Incorrect IAM authentication information: the access key is locked for 5 minutes "
    "after repeated authentication failures"
)
NO_API_MESSAGE = "The API does not exist or has not been published in the environment"


def gateway_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = uuid.uuid4().hex
    return web.json_response(
        {"error_msg": message, "error_code": code, "request_id": request_id},
        status=status,
        headers={"X-Request-Id": request_id, **(headers or {})},
    )


def ims_error(error: SimError) -> web.Response:
    return web.json_response(
        {"error": {"message": error.message, "code": error.code}},
        status=error.status,
        headers={"X-Request-Id": uuid.uuid4().hex},
    )


def authenticate(
    world: World, request: web.Request, body: bytes, now: float
) -> Account | web.Response:
    """The signing account, or the gateway's 401 (every failure is recorded in ``world``)."""
    header = request.headers.get("Authorization", "")
    parsed = parse_authorization(header)
    if parsed is None:
        world.note_auth_failure("<malformed>" if header else "<missing>", now)
        return gateway_error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: no valid SDK-HMAC-SHA256 "
            "Authorization header",
        )
    key = parsed.access_key
    if world.is_locked(key, now):
        world.note_auth_failure(key, now)
        return gateway_error(401, "APIGW.0301", LOCKED_MESSAGE)
    account = world.account_by_access_key(key)
    problem = _signature_problem(request, body, parsed, account, now, world.params.max_skew)
    if problem is not None or account is None:
        world.note_auth_failure(key, now)
        code, message = problem or ("APIGW.0301", "")
        return gateway_error(401, code, message)
    world.note_auth_success(key)
    return account


def _signature_problem(
    request: web.Request,
    body: bytes,
    parsed: Authorization,
    account: Account | None,
    now: float,
    max_skew: float,
) -> tuple[str, str] | None:
    fail = "Incorrect IAM authentication information: "
    if account is None:
        return "APIGW.0301", fail + "the access key does not exist"
    signed = [name.lower() for name in parsed.signed_headers]
    missing = [name for name in signed if name not in request.headers]
    if "x-sdk-date" not in signed or missing:
        return "APIGW.0301", fail + "X-Sdk-Date or a signed header is missing"
    try:
        moment = datetime.strptime(request.headers["X-Sdk-Date"], DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return "APIGW.0301", fail + "X-Sdk-Date is not in the YYYYMMDDTHHMMSSZ format"
    if abs(moment.timestamp() - now) > max_skew:
        return (
            "APIGW.0303",
            "Incorrect app authentication information: X-Sdk-Date is more than 15 "
            "minutes off the server's clock",
        )
    headers = {name: request.headers[name] for name in signed}
    expected = compute_signature(
        account.secret_key,
        request.method,
        request.rel_url.raw_path,
        canonical_query(request.query.items()),
        headers,
        signed,
        body,
    )
    if not hmac.compare_digest(expected, parsed.signature):
        return "APIGW.0301", fail + "verify aksk signature fail"
    if account.security_token is not None:
        if request.headers.get("X-Security-Token") != account.security_token:
            return "APIGW.0301", fail + "the security token is missing or wrong"
        if account.token_expires_at is not None and now > account.token_expires_at:
            return "APIGW.0307", "The token must be updated"
    return None
