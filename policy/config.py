"""Authentication configuration: what policy reads, built from Settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AuthConfig:
    """Token issuing and verification, sign-in lockout and the OpenID Connect providers."""

    keys_dir: Path  # token signing keys (PEM files, mode 0600)
    token_issuer: str = "ferry"
    token_audience: str = "ferry"
    access_token_seconds: int = 300
    refresh_token_seconds: int = 8 * 3600
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    oidc_providers: str = ""  # a TOML file's path; empty: none
