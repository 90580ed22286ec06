"""What to do next, worded once: the terminal and ``events.jsonl`` say the same words.

Every function returns a sentence fragment that follows the statement of what is wrong, so a
line reads ``<what is wrong>: <what to do>``.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.core.cloud import CloudError
from orchestrator.core.exits import ExitCode


class CredentialNames(Protocol):
    """Where a tenant's key is read from (a config tenant): the names, never the values."""

    @property
    def access_key_env(self) -> str: ...
    @property
    def secret_key_env(self) -> str: ...
    @property
    def security_token_env(self) -> str: ...


_NEXT: dict[int, str] = {
    ExitCode.OK: "nothing left to do",
    ExitCode.ATTENTION: "read the problems above (they are also in report.csv and events.jsonl), "
    "fix what they name, then run again; `run --retry-failed` gives failed items a new attempt",
    ExitCode.USAGE: "fix what the message names; nothing was submitted",
    ExitCode.LATER: "run the same command again later: it resumes where this run stopped and "
    "follows the copies still running in the cloud",
}


def next_step(exit_code: int) -> str:
    """What the person (or cron) should do after a run that ended with ``exit_code``."""
    return _NEXT.get(exit_code, "see the message above")


def blocked_advice(tenant: str, found: CredentialNames | None, *, lasting: bool = True) -> str:
    """Credentials refused: which variables to fix (``found``: the config's tenant, if any),
    and why the key is not tried again. Not ``lasting`` (a permission, the clock, a token):
    the refusal names the fix, and the next run asks again."""
    where = (
        f" (environment variables {found.access_key_env} and {found.secret_key_env}"
        f", and {found.security_token_env} for a temporary key)"
        if found is not None
        else ""
    )
    if not lasting:
        return (
            f"fix what the refusal names for tenant {tenant} (grant the permission, set the "
            f"clock, or refresh the token{where}), then run again: this refusal is not "
            "remembered, the next run asks once more"
        )
    return (
        f"fix the credentials of tenant {tenant}{where}, then run again; the refused key is not "
        "used again until it changes (the gateway locks a key after 5 bad signatures in a row)"
    )


def quota_advice(tenant: str, region: str) -> str:
    """The target's private-image quota is full."""
    return (
        f"raise the private-image quota of tenant {tenant} in {region} or delete images there "
        "that are no longer needed, then run again"
    )


def quota_full(error: str, tenant: str, region: str) -> str:
    """What is wrong and what to do when the target's quota is full (``error``: the cloud's
    words): the detail of the items it holds back, and the terminal's line."""
    return f"target quota full: {error}; {quota_advice(tenant, region)}"


# -- refusals (``ims/errors.py`` appends these to the cloud's words) -----------------------------

AUTH_ADVICE = {
    "APIGW.0301": "the access key or secret key is wrong, or the key is disabled: check the "
    "credential environment variables of this tenant",
    "APIGW.0302": "the IAM user lacks permission for this API: grant ims:images:copy and "
    "ims:images:list (and iam:projects:list if project ids are not configured)",
    "APIGW.0303": "the request date is more than 15 minutes off the cloud's clock: fix this "
    "machine's clock (NTP)",
    "APIGW.0306": "API access is denied for this account or user: check the IAM policies "
    "(ims:images:list, ims:images:copy, ims:images:get) and any deny statement",
    "APIGW.0307": "the temporary security token has expired: refresh the token and run again",
}

# A 403 of a call whose permission the classifier cannot know: the ones a run needs first.
FORBIDDEN_ADVICE = (
    "the IAM user lacks a permission for this call (a policy deny): grant ims:images:list, "
    "ims:images:get and ims:images:copy"
)

# The IAM action each call needs (docs/ims-api.md §10, Documented). A call that knows which it
# is names its own (:func:`refused_for`) rather than the advice above.
COPY = "ims:images:copy"  # POST /v1/cloudimages/{id}/cross_region_copy
LIST = "ims:images:list"  # GET /v2/cloudimages; GET /v2/{project_id}/images/{id}/tags
GET = "ims:images:get"  # GET /v1/{project_id}/cloudimages/{id}/members
UPDATE = "ims:images:update"  # POST /v2/{project_id}/images/{id}/tags/action; PATCH
DELETE = "ims:images:delete"  # DELETE /v2/images/{id}

_PERMISSION_CODES = ("APIGW.0302", "APIGW.0306")  # no permission for this API
_GENERIC = tuple(
    f" ({advice})" for advice in (FORBIDDEN_ADVICE, *(AUTH_ADVICE[c] for c in _PERMISSION_CODES))
)


def is_permission(error: CloudError) -> bool:
    """A missing permission for the call (a 403, ``APIGW.0302`` or ``APIGW.0306``), not a
    refusal of the key itself (a bad signature, a skewed clock, an expired token)."""
    code = error.code or ""
    return code in _PERMISSION_CODES or (error.status == 403 and not code.startswith("APIGW."))


def refused_for(error: CloudError, action: str) -> CloudError:
    """``error`` as a refusal of the one call that needs ``action``: a missing permission
    (:func:`is_permission`) then names that action instead of the generic advice the
    classifier gave it. Any other error is returned as is."""
    if not is_permission(error):
        return error
    message = error.message
    for generic in _GENERIC:
        if message.endswith(generic):
            message = message[: -len(generic)]
            break
    return CloudError(
        error.kind,
        f"{message} (the IAM user may not make this call: grant {action}, and check the "
        "policies for a deny statement)",
        code=error.code,
        status=error.status,
        retry_after=error.retry_after,
        request_id=error.request_id,
    )
