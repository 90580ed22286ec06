"""What to do next, worded once: the terminal and ``events.jsonl`` say the same words.

Every function returns a sentence fragment that follows the statement of what is wrong, so a
line reads ``<what is wrong>: <what to do>``.
"""

from __future__ import annotations

from orchestrator.config import Config

# By exit code (engine/scheduler.py and cli/common.py name them; this module imports neither,
# so both can use it).
_NEXT = {
    0: "nothing left to do",
    1: "read the problems above (they are also in report.csv and events.jsonl), "
    "fix what they name, then run again; `run --retry-failed` gives failed items a new attempt",
    2: "fix what the message names; nothing was submitted",
    75: "run the same command again later: it resumes where this run stopped and "
    "follows the copies still running in the cloud",
}


def next_step(exit_code: int) -> str:
    """What the person (or cron) should do after a run that ended with ``exit_code``."""
    return _NEXT.get(exit_code, "see the message above")


def blocked_advice(config: Config, tenant: str) -> str:
    """Credentials refused: which variables to fix, and why the key is not tried again."""
    found = config.tenant(tenant)
    where = (
        f" (environment variables {found.access_key_env} and {found.secret_key_env}"
        f", and {found.security_token_env} for a temporary key)"
        if found is not None
        else ""
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


def unavailable_advice() -> str:
    """The cloud could not be reached for a tenant: its items wait."""
    return "its items wait; check the endpoint and the network if it lasts, and run again later"
