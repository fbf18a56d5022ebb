"""Ferry's JWTs: every known attack refused, keys on disk, rotation, JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from ferry.settings import Settings
from foundation.errors import AuthenticationFailed
from policy.tokens import (
    KeyRing,
    TokenType,
    issue_token,
    open_key_ring,
    rotate_keys,
    verify_token,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", access_token_seconds=300, refresh_token_seconds=3600)


@pytest.fixture
def ring(settings: Settings) -> KeyRing:
    return open_key_ring(settings.auth(), NOW)


def _issue(ring: KeyRing, settings: Settings, **changes: object) -> str:
    options: dict[str, object] = {
        "subject": "7",
        "token_type": TokenType.ACCESS,
        "version": 3,
        "lifetime": timedelta(seconds=settings.access_token_seconds),
        "now": NOW,
    }
    options.update(changes)
    return issue_token(ring, settings.auth(), **options)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(settings: Settings, **changes: object) -> dict[str, object]:
    moment = int(NOW.timestamp())
    claims: dict[str, object] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": "7",
        "iat": moment,
        "nbf": moment,
        "exp": moment + 300,
        "jti": "forged",
        "typ": "access",
        "ver": 3,
    }
    claims.update(changes)
    return claims


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def test_round_trip_carries_the_claims(ring: KeyRing, settings: Settings) -> None:
    token = _issue(ring, settings, claims={"inst": ["RADB"], "roles": {"RADB": ["viewer"]}})
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == ring.current(NOW).kid
    claims = verify_token(ring, settings.auth(), token, TokenType.ACCESS, NOW + MINUTE)
    assert (claims.subject, claims.version, claims.token_type) == ("7", 3, TokenType.ACCESS)
    assert claims.expires_at == NOW + timedelta(seconds=300)
    assert claims.claims["inst"] == ["RADB"]
    assert {"iss", "aud", "iat", "nbf", "exp", "jti"} <= set(claims.claims)


def test_the_key_pair_is_kept_private_on_disk_and_reused(settings: Settings) -> None:
    first = open_key_ring(settings.auth(), NOW).current(NOW)
    files = list(settings.keys_dir.glob("*.pem"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in files[0].read_text()
    assert open_key_ring(settings.auth(), NOW).current(NOW).kid == first.kid  # a restart keeps it


def test_jwks_has_public_halves_only(ring: KeyRing) -> None:
    (key,) = ring.jwks(NOW)["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
    assert key["kid"] == ring.current(NOW).kid and key["use"] == "sig"
    assert "d" not in key


def _hs256_with_public_key(ring: KeyRing, settings: Settings) -> str:
    """The HS/RS confusion: the public key, which anyone has, used as an HMAC secret."""
    key = ring.current(NOW)
    public_pem = jwk.construct(dict(key.public_jwk), "ES256").to_pem()
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _claims(settings))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _hs256_with_jwk_json(ring: KeyRing, settings: Settings) -> str:
    key = ring.current(NOW)
    secret = json.dumps(dict(key.public_jwk)).encode()
    signing_input = _unsigned({"alg": "HS256", "kid": key.kid}, _claims(settings))
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none(ring: KeyRing, settings: Settings) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": ring.current(NOW).kid}
    return _unsigned(header, _claims(settings)) + "."


def _alg_none_capitalised(ring: KeyRing, settings: Settings) -> str:
    header = {"alg": "None", "kid": ring.current(NOW).kid}
    return _unsigned(header, _claims(settings)) + "."


def _own_key(ring: KeyRing, settings: Settings) -> str:
    """Signed by an attacker's EC key, naming Ferry's kid."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    pem = attacker.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    headers = {"kid": ring.current(NOW).kid}
    return str(jwt.encode(_claims(settings), pem.decode(), algorithm="ES256", headers=headers))


def _rs256_own_key(ring: KeyRing, settings: Settings) -> str:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = attacker.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    headers = {"kid": ring.current(NOW).kid}
    return str(jwt.encode(_claims(settings), pem.decode(), algorithm="RS256", headers=headers))


def _bad_signature(ring: KeyRing, settings: Settings) -> str:
    token = _issue(ring, settings)
    head, body, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    return f"{head}.{body}.{flipped}"


def _tampered(ring: KeyRing, settings: Settings) -> str:
    """A genuine signature over claims that were then changed (sub 7 -> 1)."""
    head, _, signature = _issue(ring, settings).split(".")
    return f"{head}.{_b64(json.dumps(_claims(settings, sub='1')).encode())}.{signature}"


def _unknown_kid(ring: KeyRing, settings: Settings) -> str:
    token = _issue(ring, settings)
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header["kid"] = "no-such-key-here"
    return f"{_b64(json.dumps(header).encode())}.{body}.{signature}"


def _no_kid(ring: KeyRing, settings: Settings) -> str:
    token = _issue(ring, settings)
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    del header["kid"]
    return f"{_b64(json.dumps(header).encode())}.{body}.{signature}"


ALGORITHM = "algorithm is not accepted"
SIGNATURE = "signature is not valid"
MALFORMED = "malformed"
UNKNOWN_KEY = "unknown key"

# attack -> (forge, the refusal it must meet: proof the right check fired, not a lucky other one)
ATTACKS = {
    "alg none": (_alg_none, ALGORITHM),
    "alg None": (_alg_none_capitalised, ALGORITHM),
    "HS256 with the public key as secret": (_hs256_with_public_key, ALGORITHM),
    "HS256 with the JWK as secret": (_hs256_with_jwk_json, ALGORITHM),
    "ES256 by another key": (_own_key, SIGNATURE),
    "RS256 by another key": (_rs256_own_key, ALGORITHM),
    "bad signature": (_bad_signature, SIGNATURE),
    "tampered claims": (_tampered, SIGNATURE),
    "unknown kid": (_unknown_kid, UNKNOWN_KEY),
    "no kid": (_no_kid, UNKNOWN_KEY),
    "expired": (
        lambda ring, settings: _issue(ring, settings, now=NOW - timedelta(hours=1)),
        "expired",
    ),
    "not yet valid": (
        lambda ring, settings: _issue(ring, settings, now=NOW + timedelta(hours=1)),
        "not valid yet",
    ),
    "wrong audience": (
        lambda ring, settings: _issue(
            ring, Settings(data_dir=settings.data_dir, token_audience="someone-else")
        ),
        "audience",
    ),
    "wrong issuer": (
        lambda ring, settings: _issue(
            ring, Settings(data_dir=settings.data_dir, token_issuer="https://evil.example")
        ),
        "issuer",
    ),
    "session token as access": (
        lambda ring, settings: _issue(ring, settings, token_type=TokenType.SESSION),
        "not an access token",
    ),
    "garbage": (lambda _ring, _settings: "not a token at all", MALFORMED),
    "three dots of garbage": (lambda _ring, _settings: "a.b.c", MALFORMED),
    "empty": (lambda _ring, _settings: "", MALFORMED),
    "two segments": (
        lambda ring, settings: ".".join(_issue(ring, settings).split(".")[:2]),
        MALFORMED,
    ),
    "huge": (lambda _ring, _settings: "e" * 100_000 + ".e.e", MALFORMED),
    "non-json header": (
        lambda _ring, _settings: f"{_b64(b'[1,2')}.{_b64(b'{}')}.{_b64(b'x')}",
        MALFORMED,
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_refused(ring: KeyRing, settings: Settings, attack: str) -> None:
    forge, refusal = ATTACKS[attack]
    token = forge(ring, settings)
    with pytest.raises(AuthenticationFailed, match=refusal):
        verify_token(ring, settings.auth(), token, TokenType.ACCESS, NOW)


def test_expiry_and_not_before_use_the_clock_passed_in(ring: KeyRing, settings: Settings) -> None:
    token = _issue(ring, settings)
    verify_token(ring, settings.auth(), token, TokenType.ACCESS, NOW + timedelta(seconds=299))
    with pytest.raises(AuthenticationFailed, match="expired"):
        verify_token(ring, settings.auth(), token, TokenType.ACCESS, NOW + timedelta(minutes=10))
    with pytest.raises(AuthenticationFailed, match="not valid yet"):
        verify_token(ring, settings.auth(), token, TokenType.ACCESS, NOW - timedelta(minutes=10))


def test_rotation_keeps_old_tokens_valid_until_they_expire(settings: Settings) -> None:
    ring = open_key_ring(settings.auth(), NOW)
    old_kid = ring.current(NOW).kid
    old_token = _issue(ring, settings)
    new = rotate_keys(settings.auth(), NOW + MINUTE)
    assert new.kid != old_kid
    # the same ring object sees the rotation another process made on disk
    assert ring.current(NOW + MINUTE).kid == new.kid
    new_token = _issue(ring, settings, now=NOW + MINUTE)
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    verify_token(ring, settings.auth(), old_token, TokenType.ACCESS, NOW + 2 * MINUTE)
    verify_token(ring, settings.auth(), new_token, TokenType.ACCESS, NOW + 2 * MINUTE)
    assert [key["kid"] for key in ring.jwks(NOW + 2 * MINUTE)["keys"]] == [new.kid, old_kid]


def test_retired_keys_leave_the_jwks_and_the_disk(settings: Settings) -> None:
    ring = open_key_ring(settings.auth(), NOW)
    old_kid = ring.current(NOW).kid
    rotated = NOW + MINUTE
    rotate_keys(settings.auth(), rotated)
    later = rotated + ring.retention + MINUTE  # every token the old key signed has expired
    assert old_kid not in [key["kid"] for key in ring.jwks(later)["keys"]]
    assert ring.find(old_kid, later) is None
    rotate_keys(settings.auth(), later)
    assert len(list(settings.keys_dir.glob("*.pem"))) == 2
    assert not list(settings.keys_dir.glob(f"*{old_kid}*"))


def test_stray_files_in_the_keys_folder_are_ignored(ring: KeyRing, settings: Settings) -> None:
    (settings.keys_dir / "README.txt").write_text("not a key")
    (settings.keys_dir / "20260101T000000000000Z.bad!kid.pem").write_text("junk")
    assert len(ring.jwks(NOW)["keys"]) == 1
    verify_token(ring, settings.auth(), _issue(ring, settings), TokenType.ACCESS, NOW)
