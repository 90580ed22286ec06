"""An access key pair as a plain value, and its fingerprint. Pure.

The config resolves it from the environment (orchestrator/config.py), the signer signs with it
(orchestrator/ims/signer.py); neither has to import the other for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the security token of a temporary (STS) pair when there is one."""

    access_key: str
    secret_key: str
    security_token: str | None = None

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Credentials(access_key={self.access_key[:4]}…, secret_key=***)"


def credential_fingerprint(credentials: Credentials) -> str:
    """A short, non-reversible fingerprint of a key pair (and token), to remember a blocked key
    without storing it: it changes when any of the three changes."""
    secret_digest = hashlib.sha256(credentials.secret_key.encode("utf-8")).hexdigest()
    material = "\x1f".join(
        (credentials.access_key, secret_digest, credentials.security_token or "")
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
