"""External OpenID Connect providers (OpenID Connect Core 1.0 §2, §3.1.3.7, §10.1.1): trust.

A hospital's own identity provider signs ID or access tokens; Ferry accepts one when its issuer
is configured, its signature verifies with a key from the provider's JWKS, and its audience is
the configured one. The person is the Ferry user with the token's email (who must exist and be
active); their memberships come only from the provider's mapping (a claim value -> institution
code and roles), so a provider can never grant more than its configuration names. The providers
are listed in a TOML file (settings.oidc_providers; `policy.oidc_config` reads it):

    [[providers]]
    issuer = "https://idp.example.org/realms/hospital"
    jwks_url = "https://idp.example.org/realms/hospital/protocol/openid-connect/certs"
    audience = "ferry"
    algorithms = ["RS256"]            # optional; asymmetric only
    email_claim = "email"             # optional
    [[providers.memberships]]
    claim = "groups"                  # a dotted path reaches nested claims: realm_access.roles
    value = "radiology"
    institution = "RADB"
    roles = ["viewer", "receiver"]

A provider with a `client_id` (and a `name`) is also where people sign in to the portal: the
ID token of that flow is verified here too (`verify_id_token`: audience the client_id, and the
nonce of the sign-in), and its endpoints are discovered once and kept.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from foundation.errors import AuthenticationFailed, ServiceUnavailable
from policy.oidc_client import Endpoints, discover
from policy.oidc_config import (
    BrowserClient,
    MembershipRule,
    OidcConfigError,
    OidcProvider,
    load_providers,
)
from policy.roles import Role
from policy.tokens import read_unverified, verify_signature_and_claims

__all__ = [
    "BrowserClient",
    "ExternalIdentity",
    "MembershipRule",
    "OidcConfigError",
    "OidcProvider",
    "OidcProviders",
    "load_providers",
    "open_providers",
]

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
DISCOVERY_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class ExternalIdentity:
    """Who a provider's token says the person is, and the memberships its mapping gives them."""

    issuer: str
    email: str
    memberships: Mapping[str, frozenset[Role]]  # institution code -> roles


@dataclass
class _KeyCache:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: datetime | None = None
    tried_at: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _usable(key: Any) -> bool:
    """Signature keys of asymmetric types only: an `oct` key would be an HMAC secret."""
    return (
        isinstance(key, dict)
        and key.get("kty") in {"RSA", "EC"}
        and key.get("use", "sig") == "sig"
        and isinstance(key.get("kid", ""), str)
    )


def fetch_jwks(url: str) -> dict[str, dict[str, Any]]:
    """The provider's signature keys by kid, read with a size cap and a timeout."""
    body = bytearray()
    with (
        httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream("GET", url, headers={"accept": "application/json"}) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes")
    document = orjson.loads(bytes(body))
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError(f"JWKS at {url} has no 'keys' array")
    return {str(key.get("kid", "")): key for key in keys if _usable(key)}


@dataclass
class _Discovered:
    endpoints: Endpoints | None = None
    fetched_at: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class OidcProviders:
    """The configured providers, each with a JWKS cache refreshed on age or on an unknown kid,
    and (for those people sign in with) the endpoints of its discovery document."""

    def __init__(self, providers: Sequence[OidcProvider]) -> None:
        self._providers = {provider.issuer: provider for provider in providers}
        self._caches = {issuer: _KeyCache() for issuer in self._providers}
        self._discovered = {issuer: _Discovered() for issuer in self._providers}

    def knows(self, issuer: str) -> bool:
        return issuer in self._providers

    def for_browsers(self) -> tuple[BrowserClient, ...]:
        """The providers offered as a sign-in button, in the file's order."""
        return tuple(p.browser for p in self._providers.values() if p.browser is not None)

    def named(self, name: str) -> OidcProvider | None:
        """The provider whose button is `name`; None for any other name."""
        for provider in self._providers.values():
            if provider.browser is not None and provider.browser.name == name:
                return provider
        return None

    def endpoints(self, provider: OidcProvider, now: datetime) -> Endpoints:
        """The provider's endpoints, discovered at most once an hour; ProviderUnreachable."""
        assert provider.browser is not None
        cache = self._discovered[provider.issuer]
        with cache.lock:
            fresh = cache.fetched_at is not None and now - cache.fetched_at < DISCOVERY_MAX_AGE
            if cache.endpoints is None or not fresh:
                cache.endpoints, cache.fetched_at = discover(provider.browser, provider.issuer), now
            return cache.endpoints

    def _jwks_url(self, provider: OidcProvider, now: datetime) -> str:
        if provider.jwks_url:
            return provider.jwks_url
        jwks_uri = self.endpoints(provider, now).jwks_uri
        if not jwks_uri:
            raise ValueError(f"the discovery document of {provider.issuer} names no jwks_uri")
        return jwks_uri

    def _key(self, provider: OidcProvider, kid: str | None, now: datetime) -> dict[str, Any]:
        cache = self._caches[provider.issuer]
        with cache.lock:
            stale = cache.fetched_at is None or now - cache.fetched_at >= provider.jwks_max_age
            missing = (kid or "") not in cache.keys and not (kid is None and len(cache.keys) == 1)
            allowed = cache.tried_at is None or now - cache.tried_at >= provider.jwks_min_refresh
            if (stale or missing) and allowed:
                cache.tried_at = now
                try:
                    cache.keys, cache.fetched_at = fetch_jwks(self._jwks_url(provider, now)), now
                except (httpx.HTTPError, ValueError, ServiceUnavailable) as error:
                    log.warning("JWKS of %s not refreshed: %s", provider.issuer, error)
            if kid is None and len(cache.keys) == 1:
                return next(iter(cache.keys.values()))
            key = cache.keys.get(kid or "")
        if key is None:
            raise AuthenticationFailed("the token was signed by a key its issuer does not list")
        return key

    def _claims(
        self, provider: OidcProvider, token: str, audience: str, now: datetime
    ) -> dict[str, Any]:
        header, _ = read_unverified(token)
        kid = header.get("kid")
        key = self._key(provider, kid if isinstance(kid, str) else None, now)
        if key.get("alg") not in (None, header.get("alg")):
            raise AuthenticationFailed("the token's algorithm does not match its key")
        return verify_signature_and_claims(
            token,
            key,
            algorithms=provider.algorithms,
            issuer=provider.issuer,
            audience=audience,
            now=now,
        )

    def verify(self, token: str, now: datetime) -> ExternalIdentity:
        """The identity in a provider's token, verified; AuthenticationFailed otherwise."""
        _, unverified = read_unverified(token)
        provider = self._providers.get(str(unverified.get("iss")))
        if provider is None:
            raise AuthenticationFailed("the token's issuer is not trusted")
        claims = self._claims(provider, token, provider.audience, now)
        return _identity(provider, claims)

    def verify_id_token(
        self, provider: OidcProvider, token: str, nonce: str, now: datetime
    ) -> ExternalIdentity:
        """The identity in the ID token of a portal sign-in at `provider` (OpenID Connect Core
        §3.1.3.7): its issuer, its signature, its times, the client_id as audience (and as
        `azp` when there are several), and the nonce this sign-in sent."""
        assert provider.browser is not None
        client_id = provider.browser.client_id
        claims = self._claims(provider, token, client_id, now)
        audiences = claims.get("aud")
        if isinstance(audiences, list) and len(audiences) > 1 and claims.get("azp") != client_id:
            raise AuthenticationFailed("the ID token was issued to another client")
        offered = claims.get("nonce")
        if not isinstance(offered, str) or not hmac.compare_digest(
            offered.encode(), nonce.encode()
        ):
            raise AuthenticationFailed("the ID token is not of this sign-in (nonce)")
        return _identity(provider, claims)


def _identity(provider: OidcProvider, claims: Mapping[str, Any]) -> ExternalIdentity:
    """The person a provider vouches for, with the memberships its mapping gives them."""
    email = claims.get(provider.email_claim)
    if not isinstance(email, str) or "@" not in email or claims.get("email_verified") is False:
        raise AuthenticationFailed("the token carries no verified email")
    memberships: dict[str, frozenset[Role]] = {}
    for rule in provider.memberships:
        if rule.matches(claims):
            memberships[rule.institution] = memberships.get(rule.institution, frozenset()) | (
                rule.roles
            )
    return ExternalIdentity(provider.issuer, email.strip().lower(), memberships)


def open_providers(path_text: str) -> OidcProviders:
    """The providers named by AuthConfig.oidc_providers (a path; empty: none)."""
    return OidcProviders(load_providers(Path(path_text)) if path_text else ())
