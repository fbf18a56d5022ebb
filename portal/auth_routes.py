"""Sign-in over HTTP: OAuth 2.0 token endpoint (RFC 6749 §4.3, §6), portal sessions, the JWKS.

- `POST /auth/token`: email and password (or `grant_type=refresh_token`) -> access and refresh
  tokens, as JSON or an HTML form would send them;
- `POST /auth/refresh`: a refresh token -> a new pair; the old refresh token is spent;
- `POST /auth/login`, `POST /auth/logout`: the portal's session and CSRF cookies;
- every password sign-in (`/auth/login`, the password grant) is a `login` audit event, allowed
  or refused (`portal.sign_in_audit`); a refresh continues an audited sign-in and is not one;
- `GET /auth/me`: who the request's credentials say it is;
- `GET /.well-known/jwks.json`: Ferry's public signing keys (RFC 7517 §5).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import parse_qsl

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from foundation.errors import (
    AuthenticationFailed,
    BadRequestBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from policy.authentication import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Authenticator,
    Credentials,
    SessionGrant,
    TokenGrant,
)
from policy.models import User
from policy.passwords import SignInRefused, authenticate_password
from policy.principal import PrincipalKind
from policy.refresh_tokens import issue_refresh_token as store_refresh_token
from policy.refresh_tokens import revoke_refresh_token, rotate_refresh_token
from policy.sessions import open_session
from policy.tokens import TokenType
from portal.sign_in_audit import audit_sign_in

MAX_BODY_BYTES = 64 * 1024  # a sign-in form is tiny; anything bigger is a mistake or an attack
MAX_FIELD_LENGTH = 4096
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}  # RFC 6749 §5.1
Signed = TypeVar("Signed")


def _now() -> datetime:
    return datetime.now(UTC)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def read_fields(request: Request, *, optional: bool = False) -> dict[str, str]:
    """A flat object of short text fields, from JSON or an urlencoded form."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await _read_body(request)
    if optional and not body:
        return {}
    if media_type == "application/json":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise BadRequestBody(f"the body is not valid JSON: {error}") from error
        if not isinstance(document, dict):
            raise BadRequestBody("the body must be a JSON object")
        fields = document
    elif media_type == "application/x-www-form-urlencoded":
        try:
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
        except (UnicodeDecodeError, ValueError) as error:
            raise BadRequestBody(f"the form cannot be read: {error}") from error
    else:
        raise UnsupportedMediaType("send application/json or application/x-www-form-urlencoded")
    for name, value in fields.items():
        if not isinstance(value, str) or len(value) > MAX_FIELD_LENGTH:
            raise BadRequestBody(f"field {name!r} must be text of at most {MAX_FIELD_LENGTH}")
    return fields


def _require(fields: dict[str, str], *names: str) -> str:
    """The first of `names` present and non-empty: `username` is OAuth's word for the email."""
    for name in names:
        if fields.get(name):
            return fields[name]
    raise BadRequestBody(f"the field {names[0]!r} is required")


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def _grant(
    authenticator: Authenticator, user: User, refresh: str, sid: str, now: datetime
) -> TokenGrant:
    access = authenticator.issue_access_token(user, now, sid)
    return TokenGrant(access, authenticator.config.access_token_seconds, refresh)


def password_grant(authenticator: Authenticator, email: str, password: str) -> TokenGrant:
    """A new sign-in session; its refresh tokens' family and its access tokens' `sid` name it."""
    now = _now()
    config, engine = authenticator.config, authenticator.engine
    user = authenticate_password(engine, config, email, password, now)
    lifetime = timedelta(seconds=config.refresh_token_seconds)
    sid = open_session(engine, user.pk or 0, lifetime, now)
    refresh = store_refresh_token(engine, user, lifetime, now, sid)
    return _grant(authenticator, user, refresh, sid, now)


def refresh_grant(authenticator: Authenticator, presented: str) -> TokenGrant:
    now = _now()
    lifetime = timedelta(seconds=authenticator.config.refresh_token_seconds)
    user, refresh, sid = rotate_refresh_token(authenticator.engine, presented, lifetime, now)
    return _grant(authenticator, user, refresh, sid, now)


async def issue_token(request: Request) -> Response:
    fields = await read_fields(request)
    grant_type = fields.get("grant_type", "password")
    authenticator = _authenticator(request)
    if grant_type == "password":
        email = fields.get("username") or fields.get("email") or ""
        grant = await _audited_sign_in(
            request, email, lambda: password_grant(authenticator, *_credentials(fields)),
            grant="password",
        )  # fmt: skip
    elif grant_type == "refresh_token":
        presented = _require(fields, "refresh_token")
        grant = await anyio.to_thread.run_sync(refresh_grant, authenticator, presented)
    else:
        raise BadRequestBody("grant_type must be password or refresh_token")
    return JSONResponse(grant.to_json(), headers=NO_STORE)


def _audit(request: Request, email: str, allowed: bool, why: str, grant: str) -> None:
    if grant:
        audit_sign_in(request, email, allowed, why, protocol="api", method="password", grant=grant)
    else:
        audit_sign_in(request, email, allowed, why, protocol="api", method="password")


def _credentials(fields: dict[str, str]) -> tuple[str, str]:
    return _require(fields, "username", "email"), _require(fields, "password")


async def _audited_sign_in(
    request: Request, email: str, sign_in: Callable[[], Signed], grant: str = ""
) -> Signed:
    """`sign_in()` on a worker thread, and its `login` event, allowed or refused (with why),
    written before anything is answered: if the event cannot be written, nothing is issued."""
    try:
        signed = await anyio.to_thread.run_sync(sign_in)
    except (AuthenticationFailed, BadRequestBody) as failure:
        why = failure.why if isinstance(failure, SignInRefused) else str(failure)
        refused = functools.partial(_audit, request, email, False, why, grant)
        await anyio.to_thread.run_sync(refused)
        raise
    # the account's own spelling, as the portal's sign-in names it
    allowed = functools.partial(_audit, request, email.strip().lower(), True, "", grant)
    await anyio.to_thread.run_sync(allowed)
    return signed


async def refresh_token(request: Request) -> Response:
    presented = _require(await read_fields(request), "refresh_token")
    call = functools.partial(refresh_grant, _authenticator(request), presented)
    grant = await anyio.to_thread.run_sync(call)
    return JSONResponse(grant.to_json(), headers=NO_STORE)


def _secure(request: Request) -> bool:
    public_url = request.app.state.portal.public_url or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


async def login(request: Request) -> Response:
    fields = await read_fields(request)
    authenticator = _authenticator(request)
    engine, config = authenticator.engine, authenticator.config

    def sign_in() -> SessionGrant:
        email, password = _require(fields, "email", "username"), _require(fields, "password")
        now = _now()
        user = authenticate_password(engine, config, email, password, now)
        return authenticator.issue_session(user, now)

    email = fields.get("email") or fields.get("username") or ""
    grant = await _audited_sign_in(request, email, sign_in)
    body = {"user": {"id": grant.user_pk, "email": grant.email}, "csrf_token": grant.csrf_token}
    response = JSONResponse(body, headers=NO_STORE)
    set_session_cookies(request, response, grant)
    return response


def set_session_cookies(request: Request, response: Response, grant: SessionGrant) -> None:
    """The session cookie (HttpOnly, SameSite=Lax, Secure behind https) and its CSRF token."""
    secure, max_age = _secure(request), grant.expires_in
    response.set_cookie(
        SESSION_COOKIE, grant.session_token, max_age, httponly=True, samesite="lax", secure=secure
    )
    # Readable by the page's script, which echoes it in the X-CSRF-Token header (double submit).
    response.set_cookie(CSRF_COOKIE, grant.csrf_token, max_age, samesite="lax", secure=secure)


def clear_session_cookies(request: Request, response: Response) -> None:
    secure = _secure(request)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=secure)
    response.delete_cookie(CSRF_COOKIE, samesite="lax", secure=secure)


def _bearer(credentials: Credentials) -> str | None:
    scheme, _, token = (credentials.authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def logout(request: Request) -> Response:
    """Ends the sign-in session on the server: the session cookie's, the bearer access token's,
    and the refresh token's; a live cookie must prove the request is its own (CSRF token)."""
    authenticator = _authenticator(request)
    credentials = Credentials.from_request(request.method, request.headers, request.cookies)
    if credentials.session is not None:
        as_read = Credentials("GET", session=credentials.session)
        try:
            await anyio.to_thread.run_sync(authenticator.authenticate, as_read, _now())
        except AuthenticationFailed:
            pass  # a dead session: nothing to protect, just clear the cookies
        else:
            await anyio.to_thread.run_sync(authenticator.authenticate, credentials, _now())
    tokens = {TokenType.SESSION: credentials.session, TokenType.ACCESS: _bearer(credentials)}
    await anyio.to_thread.run_sync(authenticator.sign_out, tokens, _now())
    presented = (await read_fields(request, optional=True)).get("refresh_token")
    if presented:
        call = functools.partial(revoke_refresh_token, authenticator.engine, presented, _now())
        await anyio.to_thread.run_sync(call)
    response = Response(status_code=204, headers=NO_STORE)
    clear_session_cookies(request, response)
    return response


async def who_am_i(request: Request) -> Response:
    credentials = Credentials.from_request(request.method, request.headers, request.cookies)
    authenticator = _authenticator(request)
    principal = await anyio.to_thread.run_sync(authenticator.authenticate, credentials, _now())
    if principal.kind is PrincipalKind.ANONYMOUS:
        raise AuthenticationFailed("sign in, or send `Authorization: Bearer <token>`")
    memberships = {str(pk): sorted(roles) for pk, roles in principal.memberships.items()}
    scopes = None if principal.scopes is None else sorted(principal.scopes)
    body = {
        "kind": principal.kind.value,
        "id": principal.id,
        "name": principal.name,
        "system_admin": principal.system_admin,
        "memberships": memberships,
        "scopes": scopes,
    }
    return JSONResponse(body, headers=NO_STORE)


async def jwks(request: Request) -> Response:
    document = _authenticator(request).keys.jwks(_now())
    return JSONResponse(document, headers={"cache-control": "public, max-age=300"})


ROUTES = [
    Route("/auth/token", issue_token, methods=["POST"]),
    Route("/auth/refresh", refresh_token, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/me", who_am_i, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
]
