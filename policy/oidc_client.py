"""Ferry as an OpenID Connect client: the authorization code flow (OpenID Connect Core 1.0 §3.1).

- `discover`: a provider's endpoints from its discovery document (OpenID Connect Discovery 1.0
  §4), whose `issuer` must be the configured one (§4.3);
- `authorization_url`: the authentication request (§3.1.2.1) with `state`, `nonce` and a PKCE
  S256 code challenge (RFC 7636 §4.2);
- `redeem_code`: the token request (§3.1.3.1, RFC 6749 §4.1.3, with the code verifier) at the
  token endpoint; the ID token it returns is verified by `policy.oidc` like any provider token.

Answers from the provider are read with a size cap and a timeout. The client secret goes only
to the token endpoint, never into a log line or an error message.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from foundation.errors import AuthenticationFailed, ServiceUnavailable
from policy.oidc_config import BrowserClient, web_url

MAX_ANSWER_BYTES = 512 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
SCOPE = "openid email"


class ProviderUnreachable(ServiceUnavailable):
    """The provider did not answer, or answered what is not an OpenID Connect document."""


class SignInRefused(AuthenticationFailed):
    """The provider refused, or what it sent back does not prove who the person is."""


@dataclass(frozen=True)
class Endpoints:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str = ""


def s256_challenge(verifier: str) -> str:
    """The PKCE code challenge of a verifier (RFC 7636 §4.2, S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def read_json(response: httpx.Response, url: str) -> dict[str, Any]:
    """A JSON object from a streamed answer, at most MAX_ANSWER_BYTES."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError(f"the answer of {url} is larger than {MAX_ANSWER_BYTES} bytes")
    document = orjson.loads(bytes(body))
    if not isinstance(document, dict):
        raise ValueError(f"the answer of {url} is not a JSON object")
    return document


def discover(client: BrowserClient, issuer: str) -> Endpoints:
    """The endpoints named in the configuration, else those of the discovery document."""
    if client.authorization_endpoint and client.token_endpoint:
        return Endpoints(client.authorization_endpoint, client.token_endpoint)
    url = client.discovery_url
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http,
            http.stream("GET", url, headers={"accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            document = read_json(response, url)
    except (httpx.HTTPError, ValueError) as error:
        raise ProviderUnreachable(f"{client.display_name} cannot be reached now") from error
    return _endpoints(client, issuer, document)


def _endpoints(client: BrowserClient, issuer: str, document: dict[str, Any]) -> Endpoints:
    if document.get("issuer") != issuer:
        raise ProviderUnreachable(
            f"{client.display_name}'s discovery document names another issuer"
        )
    authorize = client.authorization_endpoint or document.get("authorization_endpoint")
    token = client.token_endpoint or document.get("token_endpoint")
    jwks = document.get("jwks_uri", "")
    for url in (authorize, token):
        if not isinstance(url, str) or not web_url(url, clear_text_anywhere=False):
            raise ProviderUnreachable(f"{client.display_name}'s discovery document is unusable")
    if not isinstance(jwks, str) or (jwks and not web_url(jwks)):
        raise ProviderUnreachable(f"{client.display_name}'s discovery document is unusable")
    assert isinstance(authorize, str) and isinstance(token, str)
    return Endpoints(authorize, token, jwks)


def authorization_url(
    client: BrowserClient,
    endpoints: Endpoints,
    redirect_uri: str,
    *,
    state: str,
    nonce: str,
    verifier: str,
) -> str:
    """Where the browser goes to sign in at the provider (OpenID Connect Core §3.1.2.1)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPE,
            "state": state,
            "nonce": nonce,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if "?" in endpoints.authorization_endpoint else "?"
    return f"{endpoints.authorization_endpoint}{separator}{query}"


def redeem_code(
    client: BrowserClient, endpoints: Endpoints, code: str, redirect_uri: str, verifier: str
) -> str:
    """The ID token the token endpoint gives for an authorization code (§3.1.3)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    auth: httpx.BasicAuth | None = None
    if client.token_auth_method == "client_secret_basic":
        # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic scheme.
        auth = httpx.BasicAuth(_form_encoded(client.client_id), _form_encoded(client.client_secret))
    else:
        form["client_id"] = client.client_id
        if client.token_auth_method == "client_secret_post":
            form["client_secret"] = client.client_secret
    document = _post_token_request(client, endpoints.token_endpoint, form, auth)
    id_token = document.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise SignInRefused(f"{client.display_name} sent no ID token")
    return id_token


def _form_encoded(text: str) -> str:
    return urlencode({"": text})[1:]


def _answer(response: httpx.Response, url: str, status: int) -> dict[str, Any]:
    """The token endpoint's JSON; a refusal that is not JSON reads as one without a code."""
    try:
        return read_json(response, url)
    except ValueError as error:
        if status == 200:
            raise SignInRefused(f"the answer of {url} is not a token response") from error
        return {}


def _post_token_request(
    client: BrowserClient, url: str, form: dict[str, str], auth: httpx.BasicAuth | None
) -> dict[str, Any]:
    headers = {"accept": "application/json"}
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http,
            http.stream("POST", url, data=form, auth=auth, headers=headers) as response,
        ):
            status = response.status_code
            document = _answer(response, url, status)
    except httpx.HTTPError as error:
        raise ProviderUnreachable(f"{client.display_name} cannot be reached now") from error
    if status != 200:
        code = document.get("error")
        why = f" ({code})" if isinstance(code, str) and code.isascii() and len(code) < 64 else ""
        if status >= 500:
            raise ProviderUnreachable(f"{client.display_name} cannot complete the sign-in now")
        raise SignInRefused(f"{client.display_name} refused to complete the sign-in{why}")
    return document
