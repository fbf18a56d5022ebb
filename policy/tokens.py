"""JSON Web Tokens (RFC 7519): Ferry's ES256 keys (RFC 7518 §3.4), JWKS (RFC 7517), verification.

All JWT code lives here, so the rules that keep tokens safe are written once:
- `algorithms` is always pinned: ES256 for Ferry's tokens, a provider's configured asymmetric
  list for OpenID Connect; `none` and HMAC never verify, so a public key used as an HMAC secret
  (the HS/RS confusion) gets nowhere.
- the `kid` must name a known key; issuer, audience, expiry and not-before are always checked
  against a `now` passed in (never read here), and a token's type (access or session) must match.

Signing keys are PEM files in `AuthConfig.keys_dir` (mode 0600), one per key, named by creation time
and `kid`. The newest signs; older ones still verify until every token they signed has expired.
Every worker re-reads the folder when it changes, so `ferry admin rotate-keys` reaches all of them.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt
from jose.exceptions import JOSEError, JWTClaimsError

from foundation.errors import AuthenticationFailed
from policy.config import AuthConfig

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
MAX_TOKEN_LENGTH = 16 * 1024
LEEWAY = timedelta(seconds=30)  # clock skew between workers and identity providers
_KEY_FILE = re.compile(r"^(?P<created>\d{8}T\d{12}Z)\.(?P<kid>[A-Za-z0-9_-]{8,64})\.pem$")
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


class TokenType(StrEnum):
    ACCESS = "access"
    SESSION = "session"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created_at: datetime
    private_pem: str = field(repr=False)
    public_jwk: Mapping[str, str]


@dataclass(frozen=True)
class TokenClaims:
    """A verified Ferry token: who, which version of their credentials, and what else it says."""

    subject: str
    token_type: TokenType
    version: int
    token_id: str
    issued_at: datetime
    expires_at: datetime
    claims: Mapping[str, Any]


def _read_key(path: Path, created_at: datetime, kid: str) -> SigningKey:
    pem = path.read_text()
    public = jwk.construct(pem, ALGORITHM).public_key().to_dict()
    public_jwk = {**public, "kid": kid, "use": "sig", "alg": ALGORITHM}
    return SigningKey(kid, created_at, pem, public_jwk)


def _write_key(keys_dir: Path, now: datetime) -> SigningKey:
    """Written under a temporary name with mode 0600 from the start, then renamed into place."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = secrets.token_urlsafe(12)
    created = now.astimezone(UTC)
    final = keys_dir / f"{created.strftime(_TIME_FORMAT)}.{kid}.pem"
    temporary = keys_dir / f".{kid}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    return _read_key(final, created, kid)


class KeyRing:
    """Ferry's signing keys, read from one folder and re-read whenever the folder changes."""

    def __init__(self, keys_dir: Path, retention: timedelta) -> None:
        self.keys_dir = keys_dir
        self.retention = retention  # the longest a token signed by a retired key stays valid
        self._lock = threading.Lock()
        self._stamp: frozenset[str] | None = None
        self._keys: list[SigningKey] = []

    def _all(self) -> list[SigningKey]:
        """Every key on disk, oldest first."""
        try:  # the names say it all: a rotation adds a file, pruning removes one
            stamp = frozenset(name for name in os.listdir(self.keys_dir) if _KEY_FILE.match(name))
        except FileNotFoundError:
            return []
        with self._lock:
            if stamp != self._stamp:
                self._keys, self._stamp = self._load(), stamp
            return self._keys

    def _load(self) -> list[SigningKey]:
        keys = []
        for path in sorted(self.keys_dir.iterdir()):
            if (match := _KEY_FILE.match(path.name)) is None:
                continue
            created = datetime.strptime(match["created"], _TIME_FORMAT).replace(tzinfo=UTC)
            if path.stat().st_mode & 0o077:
                log.warning("signing key %s is readable by others; chmod 600 it", path)
            keys.append(_read_key(path, created, match["kid"]))
        return keys

    def valid_keys(self, now: datetime) -> list[SigningKey]:
        """The current key and those retired so recently that their tokens may still be alive."""
        keys = self._all()
        return [
            key
            for key, successor in zip(keys, [*keys[1:], None], strict=True)
            if successor is None or successor.created_at + self.retention > now
        ]

    def current(self, now: datetime) -> SigningKey:
        """The newest key; the first call on an empty folder generates one (the first start)."""
        keys = self._all()
        if keys:
            return keys[-1]
        _write_key(self.keys_dir, now)
        return self._all()[-1]

    def find(self, kid: str, now: datetime) -> SigningKey | None:
        return next((key for key in self.valid_keys(now) if key.kid == kid), None)

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """The JWK Set (RFC 7517 §5) for `/.well-known/jwks.json`: public halves only."""
        return {"keys": [dict(key.public_jwk) for key in reversed(self.valid_keys(now))]}

    def rotate(self, now: datetime) -> SigningKey:
        """A new current key; keys whose tokens have all expired are deleted."""
        new = _write_key(self.keys_dir, now)
        keep = {key.kid for key in self.valid_keys(now)}
        for path in self.keys_dir.iterdir():
            match = _KEY_FILE.match(path.name)
            if match is not None and match["kid"] not in keep:
                path.unlink(missing_ok=True)
        return new


def _key_ring(config: AuthConfig) -> KeyRing:
    longest = max(config.access_token_seconds, config.refresh_token_seconds)
    return KeyRing(config.keys_dir, timedelta(seconds=longest) + LEEWAY)


def open_key_ring(config: AuthConfig, now: datetime | None = None) -> KeyRing:
    """The key ring for this configuration, with a key generated if there is none yet."""
    ring = _key_ring(config)
    ring.current(now or datetime.now(UTC))
    return ring


def rotate_keys(config: AuthConfig, now: datetime | None = None) -> SigningKey:
    """Start signing with a new key; the previous ones keep verifying until their tokens expire."""
    return _key_ring(config).rotate(now or datetime.now(UTC))


def issue_token(
    ring: KeyRing,
    config: AuthConfig,
    *,
    subject: str,
    token_type: TokenType,
    version: int,
    lifetime: timedelta,
    now: datetime,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed token with the registered claims (RFC 7519 §4.1) plus type and version."""
    key = ring.current(now)
    moment = int(now.timestamp())
    payload = {
        **(claims or {}),
        "iss": config.token_issuer,
        "aud": config.token_audience,
        "sub": subject,
        "iat": moment,
        "nbf": moment,
        "exp": moment + int(lifetime.total_seconds()),
        "jti": secrets.token_urlsafe(16),
        "typ": token_type.value,
        "ver": version,
    }
    header_type = "at+jwt" if token_type is TokenType.ACCESS else "JWT"  # RFC 9068 §2.1
    headers = {"kid": key.kid, "typ": header_type}
    return str(jwt.encode(payload, key.private_pem, algorithm=ALGORITHM, headers=headers))


def read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, NOT verified: only to choose which key and issuer rules apply."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise AuthenticationFailed("the token is malformed")
    try:
        header, claims = jwt.get_unverified_header(token), jwt.get_unverified_claims(token)
    except (JOSEError, ValueError, TypeError, UnicodeError) as error:
        raise AuthenticationFailed("the token is malformed") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthenticationFailed("the token is malformed")
    return header, claims


def verify_signature_and_claims(
    token: str,
    key: Mapping[str, Any],
    *,
    algorithms: Sequence[str],
    issuer: str,
    audience: str,
    now: datetime,
) -> dict[str, Any]:
    """The claims of a token whose signature, issuer, audience and times all hold.

    The one place jose verifies: `algorithms` never comes from the token, and only asymmetric
    algorithms are ever allowed.
    """
    allowed = [name for name in algorithms if name in ASYMMETRIC_ALGORITHMS]
    header, _ = read_unverified(token)
    if header.get("alg") not in allowed:
        raise AuthenticationFailed("the token's signature algorithm is not accepted")
    options = {
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_at_hash": False,
    }
    try:
        claims = jwt.decode(
            token, dict(key), algorithms=allowed, audience=audience, issuer=issuer, options=options
        )
    except JWTClaimsError as error:
        raise AuthenticationFailed(f"the token is not for Ferry: {error}") from error
    except (JOSEError, ValueError, TypeError) as error:
        raise AuthenticationFailed("the token's signature is not valid") from error
    if not isinstance(claims, dict):
        raise AuthenticationFailed("the token's claims are not an object")
    _check_times(claims, now)
    return claims


def _check_times(claims: Mapping[str, Any], now: datetime) -> None:
    moment = now.timestamp()
    expires, not_before = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise AuthenticationFailed("the token has no expiry")
    if expires <= moment - LEEWAY.total_seconds():
        raise AuthenticationFailed("the token has expired")
    if not_before is not None and (
        not isinstance(not_before, int | float) or not_before > moment + LEEWAY.total_seconds()
    ):
        raise AuthenticationFailed("the token is not valid yet")


def verify_token(
    ring: KeyRing, config: AuthConfig, token: str, token_type: TokenType, now: datetime
) -> TokenClaims:
    """A Ferry token of the given type, verified with the key its `kid` names."""
    header, _ = read_unverified(token)
    kid = header.get("kid")
    key = ring.find(kid, now) if isinstance(kid, str) else None
    if key is None:
        raise AuthenticationFailed("the token was signed by an unknown key")
    claims = verify_signature_and_claims(
        token,
        key.public_jwk,
        algorithms=[ALGORITHM],
        issuer=config.token_issuer,
        audience=config.token_audience,
        now=now,
    )
    if claims.get("typ") != token_type.value:
        article = "an" if token_type is TokenType.ACCESS else "a"
        raise AuthenticationFailed(f"this is not {article} {token_type.value} token")
    subject, version, token_id = claims.get("sub"), claims.get("ver"), claims.get("jti")
    issued = claims.get("iat")
    if not (
        isinstance(subject, str)
        and isinstance(version, int)
        and isinstance(token_id, str)
        and isinstance(issued, int)
    ):
        raise AuthenticationFailed("the token lacks its subject, version, id or issue time")
    when = datetime.fromtimestamp
    return TokenClaims(
        subject, token_type, version, token_id, when(issued, UTC), when(claims["exp"], UTC), claims
    )
