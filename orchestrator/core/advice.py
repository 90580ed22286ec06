"""What to do next, worded once: the terminal and ``events.jsonl`` say the same words.

Every function returns a sentence fragment that follows the statement of what is wrong, so a
line reads ``<what is wrong>: <what to do>``.
"""

from __future__ import annotations

from typing import Protocol

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
