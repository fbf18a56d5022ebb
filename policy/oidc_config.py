"""The OpenID Connect providers file (settings.oidc_providers): what Ferry trusts of each.

Every provider signs tokens Ferry accepts as bearer tokens (issuer, JWKS, audience, the
membership mapping). One that also names a `client_id` gets a "Sign in with ..." button on the
portal's front page (the authorization code flow, OpenID Connect Core 1.0 §3.1, with PKCE,
RFC 7636); its endpoints come from the discovery document (OpenID Connect Discovery 1.0 §4) or
are named outright. See docs/authentication.md for a whole example.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from policy.roles import Role, parse_roles
from policy.tokens import ASYMMETRIC_ALGORITHMS

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
TOKEN_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "none"})
DISCOVERY_PATH = "/.well-known/openid-configuration"


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
class BrowserClient:
    """Ferry as the provider's client: what the portal's sign-in button needs."""

    name: str  # in the portal's addresses: /sign-in/oidc/<name>
    display_name: str  # on the button: "Sign in with <display_name>"
    client_id: str
    client_secret: str = field(default="", repr=False)  # never printed, never logged
    token_auth_method: str = "client_secret_basic"  # OpenID Connect Core §9
    discovery_url: str = ""
    authorization_endpoint: str = ""
    token_endpoint: str = ""


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    jwks_url: str  # empty: the discovery document's jwks_uri
    audience: str
    algorithms: tuple[str, ...] = ("RS256",)
    email_claim: str = "email"
    memberships: tuple[MembershipRule, ...] = ()
    jwks_min_refresh: timedelta = timedelta(seconds=60)  # an unknown kid cannot force a flood
    jwks_max_age: timedelta = timedelta(hours=1)
    browser: BrowserClient | None = None  # None: bearer tokens only, no button


def web_url(text: str, *, clear_text_anywhere: bool = True) -> bool:
    """An http(s) URL with a host; plain http only to a loopback host unless allowed."""
    parts = urlsplit(text)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    return clear_text_anywhere or _loopback(parts.hostname)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(entry: Mapping[str, Any], where: str) -> str:
    """The client secret: given inline, in a file, or in an environment variable."""
    if "client_secret_file" in entry:
        try:
            return Path(str(entry["client_secret_file"])).read_text().strip()
        except OSError as error:
            raise OidcConfigError(f"{where}: client_secret_file: {error.strerror}") from None
    if "client_secret_env" in entry:
        name = str(entry["client_secret_env"])
        if not os.environ.get(name):
            raise OidcConfigError(f"{where}: client_secret_env: {name} is not set")
        return os.environ[name].strip()
    return str(entry.get("client_secret", ""))


def _browser(entry: Mapping[str, Any], issuer: str, where: str) -> BrowserClient | None:
    if "client_id" not in entry:
        return None
    name = str(entry.get("name", ""))
    if not PROVIDER_NAME.fullmatch(name):
        raise OidcConfigError(f"{where}: name must be 1-32 of a-z, 0-9 and '-' (for the URL)")
    client_id = str(entry["client_id"])
    secret = _secret(entry, where)
    default_method = "client_secret_basic" if secret else "none"
    method = str(entry.get("token_endpoint_auth_method", default_method))
    if not client_id or method not in TOKEN_AUTH_METHODS or (method != "none") != bool(secret):
        raise OidcConfigError(
            f"{where}: client_id must be non-empty, and a client secret goes with "
            "token_endpoint_auth_method client_secret_basic or client_secret_post (none without)"
        )
    named = {key: str(entry.get(key, "")) for key in ("authorization_endpoint", "token_endpoint")}
    discovery = str(entry.get("discovery_url", ""))
    if not all(named.values()):
        discovery = discovery or issuer.rstrip("/") + DISCOVERY_PATH
    for key, url in (*named.items(), ("discovery_url", discovery)):
        if url and not web_url(url, clear_text_anywhere=False):
            raise OidcConfigError(f"{where}: {key} must be an https URL (http on loopback only)")
    display = str(entry.get("display_name", "")) or name
    return BrowserClient(name, display, client_id, secret, method, discovery, **named)


def _rules(entry: Mapping[str, Any]) -> tuple[MembershipRule, ...]:
    return tuple(
        MembershipRule(
            str(rule["claim"]),
            str(rule["value"]),
            str(rule["institution"]),
            parse_roles(",".join(rule.get("roles", []))),
        )
        for rule in entry.get("memberships", [])
    )


def _provider(entry: Mapping[str, Any], where: str) -> OidcProvider:
    try:
        issuer = entry["issuer"]
        browser = _browser(entry, str(issuer), where)
        # A browser client may leave these to discovery (jwks_uri) and to its client_id.
        if browser is None:
            jwks_url, audience = entry["jwks_url"], entry["audience"]
        else:
            jwks_url = entry.get("jwks_url", "")
            audience = entry.get("audience", browser.client_id)
        algorithms = tuple(entry.get("algorithms", ["RS256"]))
        rules = _rules(entry)
        refresh = timedelta(seconds=int(entry.get("jwks_min_refresh_seconds", 60)))
        max_age = timedelta(seconds=int(entry.get("jwks_max_age_seconds", 3600)))
    except OidcConfigError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise OidcConfigError(f"{where}: {type(error).__name__}: {error}") from error
    if not all(isinstance(text, str) and text for text in (issuer, audience)):
        raise OidcConfigError(f"{where}: issuer, jwks_url and audience must be non-empty text")
    if not isinstance(jwks_url, str) or (jwks_url and not web_url(jwks_url)):
        raise OidcConfigError(f"{where}: jwks_url must be an http(s) URL")
    if not jwks_url and not (browser and browser.discovery_url):
        raise OidcConfigError(f"{where}: jwks_url is needed when no discovery document is read")
    if not algorithms or not set(algorithms) <= ASYMMETRIC_ALGORITHMS:
        allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
        raise OidcConfigError(f"{where}: algorithms must be among {allowed}")
    email_claim = str(entry.get("email_claim", "email"))
    return OidcProvider(
        issuer, jwks_url, audience, algorithms, email_claim, rules, refresh, max_age, browser
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
    providers = tuple(_provider(entry, f"{path} providers[{n}]") for n, entry in enumerate(entries))
    names = [p.browser.name for p in providers if p.browser]
    if len(names) != len(set(names)):
        raise OidcConfigError(f"{path}: two providers have the same name")
    return providers
