"""Opaque bearer secrets `<prefix><id>_<secret>`: found by id, checked against a SHA-256 hash.

The secrets are 256 random bits, so a fast hash is enough (no password stretching needed), and
the public id makes the lookup an index hit rather than a scan over hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

_ID_LENGTH = 16  # hex characters: never an underscore, so the split below is unambiguous


@dataclass(frozen=True)
class OpaqueToken:
    token_id: str
    secret_hash: str
    plaintext: str = field(repr=False)  # shown once, never stored


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_opaque_token(prefix: str) -> OpaqueToken:
    token_id, secret = secrets.token_hex(_ID_LENGTH // 2), secrets.token_urlsafe(32)
    return OpaqueToken(token_id, hash_secret(secret), f"{prefix}{token_id}_{secret}")


def split_opaque_token(prefix: str, text: str) -> tuple[str, str] | None:
    """(id, secret) if the text has this prefix and shape; None otherwise."""
    if not text.startswith(prefix) or len(text) > 256:
        return None
    token_id, _, secret = text[len(prefix) :].partition("_")
    if not token_id or not secret or len(token_id) > 32:
        return None
    return token_id, secret


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
