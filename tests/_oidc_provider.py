"""A tiny OpenID Provider for the tests: a Starlette app under uvicorn on loopback, a peer.

It has its own RSA key and serves what a hospital's Keycloak or Entra serves for the
authorization code flow (OpenID Connect Core 1.0 §3.1): the discovery document, the JWKS, an
authorization endpoint that signs `person` in at once and redirects back with a code, and a
token endpoint that checks the client's secret (HTTP Basic), the code (once), the redirect_uri
and the PKCE verifier (RFC 7636 §4.6) before it hands out a signed ID token. A test changes
what it does wrong through its attributes (`authorize_error`, `token_refusal`, `id_token_claims`,
`signing_key`), to see Ferry refuse each.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests._peers import wait_until_http_answers
from tests.conftest import free_port

CLIENT_ID = "ferry-portal"
CLIENT_SECRET = "s3cret-of-the-portal-client"


@dataclass
class RsaKey:
    kid: str
    pem: str
    public: dict[str, Any]

    @classmethod
    def new(cls, kid: str) -> RsaKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = jwk.construct(pem, "RS256").public_key().to_dict()
        return cls(kid, pem, {**public, "kid": kid, "use": "sig", "alg": "RS256"})

    def sign(self, claims: dict[str, Any]) -> str:
        return str(jwt.encode(claims, self.pem, algorithm="RS256", headers={"kid": self.kid}))


@dataclass
class _Grant:
    redirect_uri: str
    nonce: str
    challenge: str
    claims: dict[str, Any]


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class TinyProvider:
    """The provider's state; `person` is who signs in at its authorization endpoint."""

    port: int
    key: RsaKey = field(default_factory=lambda: RsaKey.new("tiny-1"))
    person: dict[str, Any] = field(default_factory=dict)
    authorize_error: str = ""  # e.g. access_denied: the person cancelled
    token_refusal: str = ""  # e.g. invalid_grant: the token endpoint answers 400
    id_token_claims: dict[str, Any] = field(default_factory=dict)  # changes to the ID token
    signing_key: RsaKey | None = None  # sign with another key (under the same kid)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    _codes: dict[str, _Grant] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.public]})

    async def _authorize(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.authorize_requests.append(query)
        wanted = (
            query.get("response_type") == "code"
            and query.get("client_id") == CLIENT_ID
            and "openid" in query.get("scope", "").split()
            and query.get("code_challenge_method") == "S256"
            and query.get("code_challenge")
            and query.get("state")
            and query.get("redirect_uri")
        )
        if not wanted:
            return Response("bad authorization request", status_code=400)
        back = {"state": query["state"]}
        if self.authorize_error:
            back["error"] = self.authorize_error
        else:
            code = secrets.token_urlsafe(16)
            self._codes[code] = _Grant(
                query["redirect_uri"], query.get("nonce", ""), query["code_challenge"],
                dict(self.person),
            )  # fmt: skip
            back["code"] = code
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", status_code=302)

    def _client_authenticated(self, request: Request) -> bool:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    async def _token(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        if not self._client_authenticated(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if self.token_refusal:
            return JSONResponse({"error": self.token_refusal}, status_code=400)
        grant = self._codes.pop(form.get("code", ""), None)  # a code is good once
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or form.get("redirect_uri") != grant.redirect_uri
            or _s256(form.get("code_verifier", "")) != grant.challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse(
            {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
             "expires_in": 300, "id_token": self._id_token(grant)},
            headers={"cache-control": "no-store"},
        )  # fmt: skip

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": "person-1", "aud": CLIENT_ID, "iat": now,
            "exp": now + 300, "nonce": grant.nonce, "email_verified": True, **grant.claims,
        }  # fmt: skip
        claims.update(self.id_token_claims)
        signer = self.signing_key or self.key
        if self.signing_key is not None:
            signer = RsaKey(self.key.kid, self.signing_key.pem, self.signing_key.public)
        return signer.sign({k: v for k, v in claims.items() if v is not None})


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


def run_provider() -> Iterator[TinyProvider]:
    """The provider served on a free loopback port, once it answers; stopped afterwards."""
    provider = TinyProvider(free_port())
    config = uvicorn.Config(
        provider.app(), host="127.0.0.1", port=provider.port, log_level="warning", lifespan="off"
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_http_answers(f"{provider.issuer}/.well-known/openid-configuration")
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def providers_file(
    provider: TinyProvider, path: Any, *, display_name: str = "Harbour Health ID"
) -> Any:
    """A providers file naming the tiny provider as a browser client, with its mapping, and a
    second provider for bearer tokens only (no client_id: no button)."""
    secret_file = path.parent / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    path.write_text(
        f"""
[[providers]]
name = "harbour"
display_name = "{display_name}"
issuer = "{provider.issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret_file}"

[[providers.memberships]]
claim = "groups"
value = "radiology"
institution = "HOSP"
roles = ["viewer", "receiver"]

[[providers.memberships]]
claim = "groups"
value = "ferry-senders"
institution = "HOSP"
roles = ["sender"]

[[providers]]
issuer = "https://bearer-only.example/realms/staff"
jwks_url = "https://bearer-only.example/realms/staff/certs"
audience = "ferry"
"""
    )
    return path
