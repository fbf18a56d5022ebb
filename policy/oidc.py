"""External OpenID Connect providers (OpenID Connect Core 1.0 §2, §10.1.1): trust and JWKS.

A hospital's own identity provider signs ID or access tokens; Ferry accepts one when its issuer
is configured, its signature verifies with a key from the provider's JWKS, and its audience is
the configured one. The person is the Ferry user with the token's email (who must exist and be
active); their memberships come only from the provider's mapping (a claim value -> institution
code and roles), so a provider can never grant more than its configuration names. The providers
are listed in a TOML file (settings.oidc_providers):

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
"""

from __future__ import annotations

import logging
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from foundation.errors import AuthenticationFailed
from policy.roles import Role, parse_roles
from policy.tokens import ASYMMETRIC_ALGORITHMS, read_unverified, verify_signature_and_claims

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 5.0


class OidcConfigError(ValueError):
    """The providers file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class MembershipRule:
    claim: str
    value: str
    institution: str
    roles: frozenset[Role]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        found: Any = claims
        for part in self.claim.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        if isinstance(found, list):
            return self.value in found
        return isinstance(found, str) and found == self.value


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    jwks_url: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256",)
    email_claim: str = "email"
    memberships: tuple[MembershipRule, ...] = ()
    jwks_min_refresh: timedelta = timedelta(seconds=60)  # an unknown kid cannot force a flood
    jwks_max_age: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class ExternalIdentity:
    """Who a provider's token says the person is, and the memberships its mapping gives them."""

    issuer: str
    email: str
    memberships: Mapping[str, frozenset[Role]]  # institution code -> roles


def _provider(entry: Mapping[str, Any], where: str) -> OidcProvider:
    try:
        issuer, jwks_url, audience = entry["issuer"], entry["jwks_url"], entry["audience"]
        algorithms = tuple(entry.get("algorithms", ["RS256"]))
        rules = tuple(
            MembershipRule(
                str(rule["claim"]),
                str(rule["value"]),
                str(rule["institution"]),
                parse_roles(",".join(rule.get("roles", []))),
            )
            for rule in entry.get("memberships", [])
        )
        refresh = timedelta(seconds=int(entry.get("jwks_min_refresh_seconds", 60)))
        max_age = timedelta(seconds=int(entry.get("jwks_max_age_seconds", 3600)))
    except (KeyError, TypeError, ValueError) as error:
        raise OidcConfigError(f"{where}: {type(error).__name__}: {error}") from error
    if not all(isinstance(text, str) and text for text in (issuer, jwks_url, audience)):
        raise OidcConfigError(f"{where}: issuer, jwks_url and audience must be non-empty text")
    if not jwks_url.startswith(("https://", "http://")):
        raise OidcConfigError(f"{where}: jwks_url must be an http(s) URL")
    if not algorithms or not set(algorithms) <= ASYMMETRIC_ALGORITHMS:
        allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
        raise OidcConfigError(f"{where}: algorithms must be among {allowed}")
    email_claim = str(entry.get("email_claim", "email"))
    return OidcProvider(
        issuer, jwks_url, audience, algorithms, email_claim, rules, refresh, max_age
    )


def load_providers(path: Path) -> tuple[OidcProvider, ...]:
    """The providers listed in a TOML file; OidcConfigError if it cannot be used as a whole."""
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OidcConfigError(f"{path}: {error}") from error
    entries = table.get("providers", [])
    if not isinstance(entries, list):
        raise OidcConfigError(f"{path}: 'providers' must be an array of tables")
    return tuple(_provider(entry, f"{path} providers[{n}]") for n, entry in enumerate(entries))


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


class OidcProviders:
    """The configured providers, each with a JWKS cache refreshed on age or on an unknown kid."""

    def __init__(self, providers: Sequence[OidcProvider]) -> None:
        self._providers = {provider.issuer: provider for provider in providers}
        self._caches = {issuer: _KeyCache() for issuer in self._providers}

    def knows(self, issuer: str) -> bool:
        return issuer in self._providers

    def _key(self, provider: OidcProvider, kid: str | None, now: datetime) -> dict[str, Any]:
        cache = self._caches[provider.issuer]
        with cache.lock:
            stale = cache.fetched_at is None or now - cache.fetched_at >= provider.jwks_max_age
            missing = (kid or "") not in cache.keys and not (kid is None and len(cache.keys) == 1)
            allowed = cache.tried_at is None or now - cache.tried_at >= provider.jwks_min_refresh
            if (stale or missing) and allowed:
                cache.tried_at = now
                try:
                    cache.keys, cache.fetched_at = fetch_jwks(provider.jwks_url), now
                except (httpx.HTTPError, ValueError) as error:
                    log.warning("JWKS of %s not refreshed: %s", provider.issuer, error)
            if kid is None and len(cache.keys) == 1:
                return next(iter(cache.keys.values()))
            key = cache.keys.get(kid or "")
        if key is None:
            raise AuthenticationFailed("the token was signed by a key its issuer does not list")
        return key

    def verify(self, token: str, now: datetime) -> ExternalIdentity:
        """The identity in a provider's token, verified; AuthenticationFailed otherwise."""
        header, unverified = read_unverified(token)
        provider = self._providers.get(str(unverified.get("iss")))
        if provider is None:
            raise AuthenticationFailed("the token's issuer is not trusted")
        kid = header.get("kid")
        key = self._key(provider, kid if isinstance(kid, str) else None, now)
        if key.get("alg") not in (None, header.get("alg")):
            raise AuthenticationFailed("the token's algorithm does not match its key")
        claims = verify_signature_and_claims(
            token,
            key,
            algorithms=provider.algorithms,
            issuer=provider.issuer,
            audience=provider.audience,
            now=now,
        )
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
