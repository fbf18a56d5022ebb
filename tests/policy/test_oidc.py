"""External OpenID Connect providers, against a fake provider serving a JWKS over loopback."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from archive.store import Archive
from ferry.settings import Settings
from foundation.errors import AuthenticationFailed
from policy.authentication import Authenticator, Credentials
from policy.models import UserStatus
from policy.oidc import OidcConfigError, OidcProvider, OidcProviders, load_providers
from policy.principal import PrincipalKind
from policy.roles import Role
from tests.policy._people import add_institution, add_user

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ISSUER = "https://idp.hospital.example/realms/staff"
AUDIENCE = "ferry-portal"


@dataclasses.dataclass
class SigningKey:
    kid: str
    pem: str
    public: dict[str, Any]
    algorithm: str = "RS256"

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls._from(kid, private, "RS256")

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls._from(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    @classmethod
    def _from(cls, kid: str, private: Any, algorithm: str) -> SigningKey:
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = jwk.construct(pem, algorithm).public_key().to_dict()
        return cls(kid, pem, {**public, "kid": kid, "use": "sig"}, algorithm)

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        return str(jwt.encode(claims, self.pem, algorithm=self.algorithm, headers=headers))


class FakeProvider:
    """A real HTTP server on loopback whose JWKS the test changes, counting the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.status = 200
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": provider.keys}).encode()
                self.send_response(provider.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def idp() -> Iterator[FakeProvider]:
    with FakeProvider() as running:
        yield running


@pytest.fixture
def key(idp: FakeProvider) -> SigningKey:
    signing = SigningKey.rsa("idp-key-1")
    idp.keys = [signing.public]
    return signing


def _config(idp: FakeProvider, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "oidc.toml"
    path.write_text(
        f"""
[[providers]]
issuer = "{ISSUER}"
jwks_url = "{idp.url}"
audience = "{AUDIENCE}"
algorithms = ["RS256", "ES256"]
jwks_min_refresh_seconds = 30
{extra}
[[providers.memberships]]
claim = "groups"
value = "radiology"
institution = "RADB"
roles = ["viewer", "receiver"]

[[providers.memberships]]
claim = "realm_access.roles"
value = "ferry-sender"
institution = "RADB"
roles = ["sender"]

[[providers.memberships]]
claim = "groups"
value = "cardiology"
institution = "CARD"
roles = ["viewer"]
"""
    )
    return path


def _claims(at: datetime = NOW, **changes: Any) -> dict[str, Any]:
    moment = int(at.timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "f:1234",
        "iat": moment,
        "exp": moment + 300,
        "email": "ada@example.org",
        "email_verified": True,
        "groups": ["radiology", "lunch-club"],
    }
    claims.update(changes)
    return claims


@pytest.fixture
def providers(idp: FakeProvider, tmp_path: Path) -> OidcProviders:
    return OidcProviders(load_providers(_config(idp, tmp_path)))


def test_a_providers_token_maps_to_memberships(providers: OidcProviders, key: SigningKey) -> None:
    token = key.sign(_claims(realm_access={"roles": ["ferry-sender"]}))
    identity = providers.verify(token, NOW)
    assert identity.email == "ada@example.org" and identity.issuer == ISSUER
    assert identity.memberships == {"RADB": frozenset({Role.VIEWER, Role.RECEIVER, Role.SENDER})}


def test_no_matching_claim_gives_no_memberships(providers: OidcProviders, key: SigningKey) -> None:
    identity = providers.verify(key.sign(_claims(groups="lunch-club")), NOW)
    assert identity.memberships == {}


def test_the_jwks_is_cached(idp: FakeProvider, providers: OidcProviders, key: SigningKey) -> None:
    for _ in range(3):
        providers.verify(key.sign(_claims()), NOW)
    assert idp.fetches == 1


def test_an_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    providers.verify(key.sign(_claims()), NOW)
    rotated = SigningKey.rsa("idp-key-2")
    idp.keys = [rotated.public, key.public]
    # within the minimum interval an unknown kid cannot make Ferry fetch again
    with pytest.raises(AuthenticationFailed, match="does not list"):
        providers.verify(rotated.sign(_claims()), NOW + timedelta(seconds=10))
    assert idp.fetches == 1
    later = NOW + timedelta(seconds=31)
    assert providers.verify(rotated.sign(_claims(later)), later).email
    assert idp.fetches == 2
    providers.verify(key.sign(_claims()), later)  # the old key is still listed
    assert idp.fetches == 2


def test_keys_are_refetched_when_old(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    providers.verify(key.sign(_claims()), NOW)
    later = NOW + timedelta(minutes=61)
    providers.verify(key.sign(_claims(later)), later)
    assert idp.fetches == 2


def test_a_provider_that_is_down_keeps_the_keys_it_gave(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    providers.verify(key.sign(_claims()), NOW)
    idp.status = 500
    later = NOW + timedelta(minutes=61)
    providers.verify(key.sign(_claims(later)), later)


def test_a_provider_that_never_answered_refuses(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    idp.status = 503
    with pytest.raises(AuthenticationFailed):
        providers.verify(key.sign(_claims()), NOW)


def test_es256_provider_keys_work(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    ec_key = SigningKey.ec("idp-ec")
    idp.keys = [key.public, ec_key.public]
    assert providers.verify(ec_key.sign(_claims()), NOW).email == "ada@example.org"


def _hs256_with_the_public_key(key: SigningKey) -> str:
    public_pem = jwk.construct(key.public, "RS256").to_pem().decode()
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    body = b64(json.dumps(_claims()).encode())
    mac = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


# case -> (forge, the refusal it must meet)
REFUSED = {
    "unknown issuer": (
        lambda key: key.sign(_claims(iss="https://evil.example/realms/x")),
        "issuer is not trusted",
    ),
    "wrong audience": (lambda key: key.sign(_claims(aud="another-app")), "audience"),
    "expired": (lambda key: key.sign(_claims(exp=int(NOW.timestamp()) - 3600)), "expired"),
    "not yet valid": (
        lambda key: key.sign(_claims(nbf=int(NOW.timestamp()) + 3600)),
        "not valid yet",
    ),
    "no email": (
        lambda key: key.sign({k: v for k, v in _claims().items() if k != "email"}),
        "no verified email",
    ),
    "unverified email": (
        lambda key: key.sign(_claims(email_verified=False)),
        "no verified email",
    ),
    "signed by a stranger": (
        lambda key: SigningKey.rsa(key.kid).sign(_claims()),
        "signature is not valid",
    ),
    "HS256 with the public key": (_hs256_with_the_public_key, "algorithm"),
    "RS512 not configured": (
        lambda key: str(
            jwt.encode(_claims(), key.pem, algorithm="RS512", headers={"kid": key.kid})
        ),
        "algorithm",
    ),
    "unknown kid": (lambda key: SigningKey.rsa("stranger").sign(_claims()), "does not list"),
    "garbage": (lambda _key: "garbage", "malformed"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_provider_tokens_are_refused(
    providers: OidcProviders, key: SigningKey, case: str
) -> None:
    forge, refusal = REFUSED[case]
    with pytest.raises(AuthenticationFailed, match=refusal):
        providers.verify(forge(key), NOW)


def test_hs256_fails_on_the_pinned_algorithms_even_if_the_key_names_none(
    idp: FakeProvider, providers: OidcProviders, key: SigningKey
) -> None:
    idp.keys = [{name: value for name, value in key.public.items() if name != "alg"}]
    with pytest.raises(AuthenticationFailed, match="algorithm is not accepted"):
        providers.verify(_hs256_with_the_public_key(key), NOW)


def test_symmetric_keys_in_a_jwks_are_never_used(
    idp: FakeProvider, providers: OidcProviders
) -> None:
    import base64
    import hashlib
    import hmac

    secret = b"shared secret of the provider"
    idp.keys = [{"kty": "oct", "kid": "hmac", "k": base64.urlsafe_b64encode(secret).decode()}]
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "hmac"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(_claims()).encode())
    signing_input = header.rstrip(b"=") + b"." + body.rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest())
    with pytest.raises(AuthenticationFailed, match="does not list"):
        providers.verify((signing_input + b"." + mac.rstrip(b"=")).decode(), NOW)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[providers]]\nissuer = 'x'\n", "KeyError"),
        (
            "[[providers]]\nissuer='i'\njwks_url='ftp://x'\naudience='a'\n",
            "http",
        ),
        (
            "[[providers]]\nissuer='i'\njwks_url='https://x'\naudience='a'\nalgorithms=['HS256']\n",
            "algorithms",
        ),
        (
            "[[providers]]\nissuer='i'\njwks_url='https://x'\naudience='a'\nalgorithms=['none']\n",
            "algorithms",
        ),
        (
            "[[providers]]\nissuer='i'\njwks_url='https://x'\naudience='a'\n"
            "[[providers.memberships]]\nclaim='g'\nvalue='v'\ninstitution='I'\nroles=['chief']\n",
            "unknown role",
        ),
        ("providers = 'nope'\n", "array"),
        ("this is not toml", "oidc.toml"),
    ],
)
def test_bad_provider_files_are_refused(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "oidc.toml"
    path.write_text(text)
    with pytest.raises(OidcConfigError, match=complaint):
        load_providers(path)


def test_a_missing_provider_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OidcConfigError):
        load_providers(tmp_path / "absent.toml")


def test_defaults_of_a_minimal_provider(tmp_path: Path) -> None:
    path = tmp_path / "oidc.toml"
    path.write_text("[[providers]]\nissuer='i'\njwks_url='https://x/certs'\naudience='a'\n")
    (provider,) = load_providers(path)
    assert provider == OidcProvider("i", "https://x/certs", "a")


# Through the Authenticator: the Ferry user by email, memberships from the mapping only


@pytest.fixture
def authenticator(
    settings: Settings, archive: Archive, idp: FakeProvider, tmp_path: Path
) -> Authenticator:
    oidc_settings = dataclasses.replace(settings, oidc_providers=str(_config(idp, tmp_path)))
    return Authenticator.open(oidc_settings.auth(), archive.engine)


def test_a_provider_token_is_a_ferry_user(
    authenticator: Authenticator, archive: Archive, key: SigningKey
) -> None:
    radb = add_institution(archive.engine, "RADB")
    card = add_institution(archive.engine, "CARD")
    # a system administrator in Ferry, and a member of CARD there: neither comes from the provider
    pk = add_user(archive.engine, "ada@example.org", memberships={card: "admin"}, system_admin=True)
    token = key.sign(_claims(email="Ada@Example.org"))
    principal = authenticator.authenticate(Credentials("GET", f"Bearer {token}"), NOW)
    assert (principal.kind, principal.id, principal.name) == (
        PrincipalKind.USER,
        pk,
        "ada@example.org",
    )
    assert principal.memberships == {radb: frozenset({Role.VIEWER, Role.RECEIVER})}
    assert not principal.system_admin


@pytest.mark.parametrize("status", [UserStatus.DISABLED, UserStatus.PENDING, None])
def test_a_provider_token_needs_an_active_ferry_user(
    authenticator: Authenticator, archive: Archive, key: SigningKey, status: UserStatus | None
) -> None:
    if status is not None:
        add_user(archive.engine, "ada@example.org", status=status)
    token = key.sign(_claims())
    with pytest.raises(AuthenticationFailed, match="no active Ferry user"):
        authenticator.authenticate(Credentials("GET", f"Bearer {token}"), NOW)


def test_a_token_of_an_unconfigured_issuer_is_refused(
    authenticator: Authenticator, archive: Archive, key: SigningKey
) -> None:
    add_user(archive.engine, "ada@example.org")
    token = key.sign(_claims(iss="https://idp.elsewhere.example"))
    with pytest.raises(AuthenticationFailed, match="issuer is not trusted"):
        authenticator.authenticate(Credentials("GET", f"Bearer {token}"), NOW)
