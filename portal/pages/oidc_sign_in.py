"""Signing in to the portal with an OpenID Connect provider (OpenID Connect Core 1.0 §3.1).

- `GET /sign-in/oidc/{provider}?next=<path>`: begins a sign-in (`policy.oidc_sign_ins`: state,
  nonce and PKCE verifier kept in the database) and sends the browser to the provider's
  authorization endpoint; the state also goes into `ferry_oidc_state`, an HttpOnly cookie of
  that provider's path that lives ten minutes, so the answer counts only in this browser.
- `GET /sign-in/oidc/{provider}/callback?code=...&state=...`: the provider's answer. The state
  must be the cookie's and a sign-in under way (taken once); the code is redeemed at the token
  endpoint with the verifier; the ID token is verified like a provider's bearer token (issuer,
  signature from the JWKS, times) with the client_id as audience and this sign-in's nonce; the
  person is the active Ferry user with its email, with the memberships of the provider's
  mapping. Then the same session cookies as a password sign-in, and back to `next`.

Every refusal is the sign-in page with the reason (400 for an answer that is not this
browser's sign-in, 401 when the provider or its token does not prove an active person, 503 when
the provider cannot be reached), without a session; each sign-in is audited either way.
"""

from __future__ import annotations

import functools
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import AuthenticationFailed, FerryError, ServiceUnavailable
from policy.authentication import Authenticator, SessionGrant
from policy.oidc import ExternalIdentity, OidcProvider
from policy.oidc_client import authorization_url, redeem_code
from policy.oidc_sign_ins import LIFETIME, PendingSignIn, SignInNotUnderWay, begin, take
from portal.auth_routes import set_session_cookies
from portal.pages.front import sign_in_choices
from portal.pages.session import public, render
from portal.sign_in_audit import audit_sign_in, institutions_by_code
from portal.sign_in_page import safe_next

STATE_COOKIE = "ferry_oidc_state"
PROVIDER_ERROR = re.compile(r"[a-z_]{1,64}")  # OAuth 2.0 error codes (RFC 6749 §4.1.2.1)


class SignInProblem(FerryError):
    """What the person is told on the sign-in page, with the page's status."""

    def __init__(self, message: str, status: int, email: str = "") -> None:
        super().__init__(message)
        self.status, self.email = status, email


def _now() -> datetime:
    return datetime.now(UTC)


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def _base_url(request: Request) -> str:
    public_url = request.app.state.portal.public_url
    return (public_url or str(request.base_url)).rstrip("/")


def _redirect_uri(request: Request, provider: OidcProvider) -> str:
    assert provider.browser is not None
    return f"{_base_url(request)}/sign-in/oidc/{provider.browser.name}/callback"


def _cookie_path(provider: OidcProvider) -> str:
    assert provider.browser is not None
    return f"/sign-in/oidc/{provider.browser.name}/"


def _secure(request: Request) -> bool:
    return _base_url(request).startswith("https://") or request.url.scheme == "https"


def _forget_state(request: Request, response: Response, provider: OidcProvider) -> None:
    response.delete_cookie(
        STATE_COOKIE, path=_cookie_path(provider), httponly=True, secure=_secure(request)
    )


def _provider(request: Request) -> OidcProvider:
    provider = _authenticator(request).providers.named(request.path_params["provider"])
    if provider is None:
        raise SignInProblem("Ferry knows no such way to sign in.", 404)
    return provider


def _refusal(request: Request, problem: SignInProblem, provider: OidcProvider | None) -> Response:
    """The sign-in page saying what went wrong; no session, and the state cookie is gone."""
    context: dict[str, object] = {"next": "/", "error": str(problem), "email": problem.email}
    context |= sign_in_choices(request)
    response = render(request, "front/sign_in.html", context, status=problem.status)
    if provider is not None:
        _forget_state(request, response, provider)
    return response


@public
async def start(request: Request) -> Response:
    """Off to the provider, with a new sign-in's state, nonce and code challenge."""
    provider: OidcProvider | None = None
    try:
        provider = _provider(request)
        assert provider.browser is not None
        authenticator, now = _authenticator(request), _now()
        try:
            endpoints = await anyio.to_thread.run_sync(
                authenticator.providers.endpoints, provider, now
            )
        except ServiceUnavailable as error:
            message = f"{error}. Try again later, or sign in with your password."
            raise SignInProblem(message, 503) from None
        target = safe_next(request.query_params.get("next"))
        name = provider.browser.name
        pending = await anyio.to_thread.run_sync(begin, authenticator.engine, name, target, now)
    except SignInProblem as problem:
        return _refusal(request, problem, None)
    location = authorization_url(
        provider.browser,
        endpoints,
        _redirect_uri(request, provider),
        state=pending.state,
        nonce=pending.nonce,
        verifier=pending.code_verifier,
    )
    response = RedirectResponse(location, status_code=303, headers={"cache-control": "no-store"})
    response.set_cookie(
        STATE_COOKIE,
        pending.state,
        max_age=int(LIFETIME.total_seconds()),
        path=_cookie_path(provider),
        httponly=True,
        samesite="lax",  # sent on the provider's redirect back, a top-level GET
        secure=_secure(request),
    )
    return response


@dataclass(frozen=True)
class _Answer:
    """The provider's answer as the browser brought it back."""

    state: str
    cookie: str
    code: str
    error: str


def _answer(request: Request) -> _Answer:
    query = request.query_params
    return _Answer(
        query.get("state", ""),
        request.cookies.get(STATE_COOKIE, ""),
        query.get("code", ""),
        query.get("error", ""),
    )


def _pending(
    authenticator: Authenticator, provider: OidcProvider, answer: _Answer
) -> PendingSignIn:
    """The sign-in this browser began and the answer names, taken once."""
    assert provider.browser is not None
    if not answer.state or not answer.cookie:
        raise SignInProblem(
            "This sign-in was not begun in this browser, or it took too long. Start again.", 400
        )
    if not hmac.compare_digest(answer.state.encode(), answer.cookie.encode()):
        raise SignInProblem("This answer belongs to another sign-in. Start again.", 400)
    try:
        return take(authenticator.engine, provider.browser.name, answer.state, _now())
    except SignInNotUnderWay:
        raise SignInProblem(
            "This sign-in was already used, or it took too long. Start again.", 400
        ) from None


def _provider_error(provider: OidcProvider, error: str) -> SignInProblem:
    assert provider.browser is not None
    who = provider.browser.display_name
    if error == "access_denied":
        return SignInProblem(f"{who} did not sign you in (it was cancelled or refused).", 401)
    code = f" ({error})" if PROVIDER_ERROR.fullmatch(error) else ""
    return SignInProblem(f"{who} could not sign you in{code}.", 401)


def _complete(
    request: Request, provider: OidcProvider, answer: _Answer
) -> tuple[SessionGrant, PendingSignIn]:
    """Everything after the answer arrives, on a worker thread; SignInProblem otherwise."""
    assert provider.browser is not None
    authenticator, who = _authenticator(request), provider.browser.display_name
    pending = _pending(authenticator, provider, answer)
    if answer.error:
        raise _provider_error(provider, answer.error)
    if not answer.code:
        raise SignInProblem(f"{who} sent no authorization code. Start again.", 400)
    now = _now()
    try:
        endpoints = authenticator.providers.endpoints(provider, now)
        id_token = redeem_code(
            provider.browser, endpoints, answer.code, _redirect_uri(request, provider),
            pending.code_verifier,
        )  # fmt: skip
    except ServiceUnavailable as error:
        raise SignInProblem(f"{error}. Try again later.", 503) from None
    except AuthenticationFailed as error:
        raise SignInProblem(f"{error}.", 401) from None
    identity = _identity(authenticator, provider, id_token, pending, now)
    try:
        user = authenticator.external_user(identity)
    except AuthenticationFailed:
        raise SignInProblem(
            f"{identity.email} has no active Ferry account. Register first, or ask your "
            "institution's administrator.",
            401,
            identity.email,
        ) from None
    mapped = institutions_by_code(authenticator.engine, identity.memberships)
    audit_sign_in(request, user.email, True, "", institutions=mapped, method="oidc",
                  provider=provider.browser.name)  # fmt: skip
    return authenticator.issue_session(user, now, identity), pending


def _identity(
    authenticator: Authenticator,
    provider: OidcProvider,
    id_token: str,
    pending: PendingSignIn,
    now: datetime,
) -> ExternalIdentity:
    assert provider.browser is not None
    try:
        return authenticator.providers.verify_id_token(provider, id_token, pending.nonce, now)
    except AuthenticationFailed as error:
        raise SignInProblem(
            f"{provider.browser.display_name}'s answer could not be verified: {error}.", 401
        ) from None


@public
async def callback(request: Request) -> Response:
    """The provider's answer: a session and back to where the person was going, or the
    sign-in page saying why not."""
    provider: OidcProvider | None = None
    try:
        provider = _provider(request)
        answer = _answer(request)
        grant, pending = await anyio.to_thread.run_sync(_complete, request, provider, answer)
    except SignInProblem as problem:
        name = provider.browser.name if provider and provider.browser else ""
        audit = functools.partial(
            audit_sign_in, request, problem.email, False, str(problem), method="oidc", provider=name
        )
        await anyio.to_thread.run_sync(audit)
        return _refusal(request, problem, provider)
    response = RedirectResponse(pending.next_path, status_code=303)
    assert provider is not None
    _forget_state(request, response, provider)
    set_session_cookies(request, response, grant)
    return response
