"""Classification of IMS and API-gateway failures: the one place that decides what an error means.

Both error body shapes are understood: IMS's ``{"error": {"code", "message"}}`` and the
gateway's ``{"error_code", "error_msg", "request_id"}`` (and, like the official SDK, any nested
dict holding one of those pairs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.core.advice import AUTH_ADVICE, FORBIDDEN_ADVICE
from orchestrator.core.cloud import CloudError, ErrorKind

AUTH_CODES = frozenset({"APIGW.0301", "APIGW.0302", "APIGW.0303", "APIGW.0306", "APIGW.0307"})
THROTTLE_CODES = frozenset({"APIGW.0308", "APIG.0308"})
BACK_PRESSURE_CODES = frozenset({"IMG.0060"})
QUOTA_CODES = frozenset({"IMG.0015"})
NOT_FOUND_CODES = frozenset({"IMG.0027", "IMG.0144"})


def _find_pair(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    for code_key, msg_key in (
        ("error_code", "error_msg"),
        ("errorCode", "errorMsg"),
        ("code", "message"),
    ):
        if code_key in body and isinstance(body.get(code_key), str):
            message = body.get(msg_key)
            return body[code_key], message if isinstance(message, str) else None
    for value in body.values():
        if isinstance(value, Mapping):
            code, message = _find_pair(value)
            if code:
                return code, message
    return None, None


def parse_error_body(raw: bytes | str) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from an error body; Nones where the body says nothing."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(body, Mapping):
        return None, None, None
    code, message = _find_pair(body)
    request_id = body.get("request_id")
    return code, message, request_id if isinstance(request_id, str) else None


def classify(
    status: int,
    code: str | None,
    message: str | None,
    *,
    mutating: bool,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> CloudError:
    """Turn an HTTP error answer into a classified :class:`CloudError`.

    ``mutating`` is true for the copy POST: a 5xx there leaves the outcome unknown. A 429 is
    the gateway refusing before the service saw the request, so it is transient either way.
    """
    text = message or f"HTTP {status}"
    kind: ErrorKind
    if code in THROTTLE_CODES or status == 429:
        kind = ErrorKind.TRANSIENT
    elif code in AUTH_CODES or status in (401, 403):
        kind = ErrorKind.AUTH
        advice = AUTH_ADVICE.get(code or "") or (FORBIDDEN_ADVICE if status == 403 else None)
        if advice:
            text = f"{text} ({advice})"
    elif code in BACK_PRESSURE_CODES:
        kind = ErrorKind.BACK_PRESSURE
    elif code in QUOTA_CODES:
        kind = ErrorKind.QUOTA
    elif status >= 500:
        kind = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
    elif status == 404 or code in NOT_FOUND_CODES:
        kind = ErrorKind.NOT_FOUND
    else:
        kind = ErrorKind.PERMANENT
    return CloudError(
        kind, text, code=code, status=status, retry_after=retry_after, request_id=request_id
    )
