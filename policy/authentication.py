"""Authentication: request credentials -> Principal (RFC 6750 bearer tokens, API tokens, sessions).

Three ways in, each ending in a read of the user or client row, so a disabled account, a bumped
token version or a revoked API token stops a live credential on its next request; and Ferry's
own tokens name their sign-in session (`sid`), read with the user, so a logout stops every copy
of that sign-in's tokens at once (`policy.sessions`). The principal built from an API token or a
Ferry token is kept (per process) and reused while the revocation epoch is the one read before
building it (`policy.auth_epoch`: the database bumps it on every revocation, role or membership
change) and the credential has not expired; so a request reads one row, not four:
- `Authorization: Bearer <jwt>`: Ferry's access token, or an OpenID Connect provider's token;
- `Authorization: Bearer ferry_<id>_<secret>`: an API client's token;
- the session cookie (a signed session token) of the portal, with a CSRF token (double submit:
  a readable cookie echoed in a header, and bound into the signed session) for unsafe methods.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_, update
from sqlmodel import Session, col, select

from foundation.errors import AuthenticationFailed
from policy._opaque import secret_matches, split_opaque_token
from policy._principal_cache import CachedPrincipal, PrincipalCache
from policy.auth_epoch import read_auth_epoch
from policy.config import AuthConfig
from policy.models import ApiClient, ApiToken, Institution, Membership, User, UserStatus
from policy.oidc import ExternalIdentity, OidcProviders, open_providers
from policy.principal import ANONYMOUS, Principal, PrincipalKind
from policy.roles import Role, Scope
from policy.sessions import UserSession, live_session, open_session, revoke_session
from policy.tokens import KeyRing, TokenType, issue_token, open_key_ring, read_unverified
from policy.tokens import verify_token as verify_ferry_token

API_TOKEN_PREFIX = "ferry_"  # policy.store.clients writes them: ferry_<16 hex>_<secret>
SESSION_COOKIE = "ferry_session"
CSRF_COOKIE = "ferry_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_USED_EVERY = timedelta(minutes=1)  # a write per request would make every read a write
REFUSED = "the credentials are not valid"
STUDIES_CLAIM = "studies"  # a viewer link's token: read these studies, nothing else


def limited_to_studies(principal: Principal, claims: Mapping[str, Any]) -> Principal:
    """A token naming studies reads only those: narrowed to the read scope and to the studies."""
    studies = claims.get(STUDIES_CLAIM)
    if studies is None:
        return principal
    if not isinstance(studies, list) or not all(isinstance(uid, str) for uid in studies):
        raise AuthenticationFailed("the token's studies claim is malformed")
    return replace(principal, studies=frozenset(studies), scopes=frozenset({Scope.READ}))


SIGNED_OUT = "the session has ended; sign in again"


@dataclass(frozen=True)
class Credentials:
    """What a request offers, read by the edge from its headers and cookies."""

    method: str
    authorization: str | None = None
    session: str | None = None
    csrf: str | None = None

    @classmethod
    def from_request(
        cls, method: str, headers: Mapping[str, str], cookies: Mapping[str, str]
    ) -> Credentials:
        return cls(
            method.upper(),
            headers.get("authorization"),
            cookies.get(SESSION_COOKIE),
            headers.get(CSRF_HEADER),
        )


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("use `Authorization: Bearer <token>`")
    return token.strip()


def _parse_roles(text: str) -> frozenset[Role]:
    """Tolerant: an unknown role name in a row grants nothing rather than failing the request."""
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in text.replace(" ", "").split(",") if name in known)


def _parse_scopes(text: str) -> frozenset[Scope]:
    known = {scope.value for scope in Scope}
    return frozenset(Scope(name) for name in text.replace(" ", "").split(",") if name in known)


def _memberships(session: Session, user_pk: int) -> dict[int, frozenset[Role]]:
    rows = session.exec(select(Membership).where(Membership.user_pk == user_pk)).all()
    return {row.institution_pk: _parse_roles(row.roles) for row in rows}


def _active_user(session: Session, user_pk: int, version: int | None) -> User:
    user = session.get(User, user_pk)
    if user is None or user.status != UserStatus.ACTIVE:
        raise AuthenticationFailed(REFUSED)
    if version is not None and user.token_version != version:
        raise AuthenticationFailed("the token was revoked; sign in again")
    return user


def _user_principal(session: Session, user: User) -> Principal:
    assert user.pk is not None
    memberships = _memberships(session, user.pk)
    return Principal(PrincipalKind.USER, user.pk, user.email, memberships, user.system_admin)


def _mapped(session: Session, by_code: Mapping[str, frozenset[Role]]) -> dict[int, frozenset[Role]]:
    """A provider's memberships (institution code -> roles) by the institutions' keys; a code
    that names no institution grants nothing."""
    found = session.exec(select(Institution).where(col(Institution.code).in_(list(by_code))))
    return {row.pk: by_code[row.code] for row in found.all() if row.pk is not None}


def _external_principal(
    session: Session, user: User, by_code: Mapping[str, frozenset[Role]]
) -> Principal:
    """The user as a provider vouches for them: its memberships only, and never Ferry's own
    system administration (a provider can grant no more than its configuration names)."""
    assert user.pk is not None
    return Principal(PrincipalKind.USER, user.pk, user.email, _mapped(session, by_code))


def _session_principal(session: Session, user: User, row: UserSession) -> Principal:
    if row.issuer is None:
        return _user_principal(session, user)
    by_code = {
        code: _parse_roles(",".join(roles)) for code, roles in row.mapped_memberships().items()
    }
    return _external_principal(session, user, by_code)


def active_user_by_email(session: Session, email: str) -> User:
    """The active user with this email (any case); AuthenticationFailed otherwise."""
    wanted = func.lower(User.email) == email.strip().lower()
    user = session.exec(select(User).where(wanted)).first()
    if user is None or user.status != UserStatus.ACTIVE or user.pk is None:
        raise AuthenticationFailed("no active Ferry user has this token's email")
    return user


@dataclass(frozen=True)
class TokenGrant:
    """An OAuth 2.0 token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    refresh_token: str

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


@dataclass(frozen=True)
class SessionGrant:
    session_token: str
    csrf_token: str
    expires_in: int
    user_pk: int
    email: str


@dataclass(frozen=True)
class _Touched:
    """An API token's last recorded use, and when it expires."""

    at: datetime | None
    expires: datetime | None


class Authenticator:
    """Built once by the composition root; holds the key ring, the providers' JWKS caches and
    the principals built from Ferry's own credentials (valid while the revocation epoch holds)."""

    def __init__(
        self, config: AuthConfig, engine: Engine, keys: KeyRing, providers: OidcProviders
    ) -> None:
        self.config, self.engine, self.keys, self.providers = config, engine, keys, providers
        self.principals = PrincipalCache()

    @classmethod
    def open(cls, config: AuthConfig, engine: Engine) -> Authenticator:
        """Generates the first signing key if there is none, and reads the OIDC providers."""
        return cls(config, engine, open_key_ring(config), open_providers(config.oidc_providers))

    def authenticate(self, credentials: Credentials, now: datetime) -> Principal:
        """The principal these credentials prove; ANONYMOUS if none are offered."""
        if credentials.authorization is not None:
            token = _bearer_token(credentials.authorization)
            if token.startswith(API_TOKEN_PREFIX):
                return self._api_token(token, now)
            return self._bearer_jwt(token, now)
        if credentials.session is not None:
            return self._session(credentials, now)
        return ANONYMOUS

    def _bearer_jwt(self, token: str, now: datetime) -> Principal:
        _, unverified = read_unverified(token)
        issuer = unverified.get("iss")
        if issuer == self.config.token_issuer:
            return limited_to_studies(*self._ferry_token(token, TokenType.ACCESS, now))
        if isinstance(issuer, str) and self.providers.knows(issuer):
            return self._external(token, now)
        raise AuthenticationFailed("the token's issuer is not trusted")

    def _ferry_token(
        self, token: str, token_type: TokenType, now: datetime
    ) -> tuple[Principal, dict[str, Any]]:
        epoch = read_auth_epoch(self.engine)  # before reading anything it vouches for
        key = PrincipalCache.key(token_type.value, token)
        cached = self.principals.get(key, epoch, now)
        if cached is not None:  # the same signed token, nothing revoked since, not expired
            return cached.principal, dict(cached.claims)
        claims = verify_ferry_token(self.keys, self.config, token, token_type, now)
        sid = claims.claims.get("sid")
        if not claims.subject.isdecimal() or not isinstance(sid, str):
            raise AuthenticationFailed(REFUSED)
        with Session(self.engine) as session:
            user = _active_user(session, int(claims.subject), claims.version)
            row = live_session(session, sid, user.pk or 0, now)
            if row is None:
                raise AuthenticationFailed(SIGNED_OUT)
            session_ends = row.expires_at
            principal = replace(_session_principal(session, user, row), session_id=sid)
        if epoch is not None:
            until = min(claims.expires_at, session_ends)
            self.principals.put(key, CachedPrincipal(epoch, principal, until, dict(claims.claims)))
        return principal, dict(claims.claims)

    def sign_out(self, tokens: Mapping[TokenType, str | None], now: datetime) -> int:
        """Revokes the session each valid token names (access token, session cookie).

        Only a token with a good signature counts, so nobody ends another's session by naming
        its id; one already expired or signed out is simply skipped. How many were ended.
        """
        ended = 0
        for token_type, token in tokens.items():
            if not token:
                continue
            try:
                claims = verify_ferry_token(self.keys, self.config, token, token_type, now)
            except AuthenticationFailed:
                continue
            sid = claims.claims.get("sid")
            if isinstance(sid, str):
                ended += revoke_session(self.engine, sid, now)
        return ended

    def _external(self, token: str, now: datetime) -> Principal:
        identity = self.providers.verify(token, now)
        with Session(self.engine) as session:
            user = active_user_by_email(session, identity.email)
            return _external_principal(session, user, identity.memberships)

    def external_user(self, identity: ExternalIdentity) -> User:
        """The active Ferry user a provider's identity names; AuthenticationFailed otherwise."""
        with Session(self.engine) as session:
            return active_user_by_email(session, identity.email)

    def _api_token(self, text: str, now: datetime) -> Principal:
        parts = split_opaque_token(API_TOKEN_PREFIX, text)
        if parts is None:
            raise AuthenticationFailed(REFUSED)
        epoch = read_auth_epoch(self.engine)  # before reading anything it vouches for
        key = PrincipalCache.key("api", text)
        cached = self.principals.get(key, epoch, now)
        if cached is None:
            principal, token_pk, touched = self._load_api_token(parts, now)
            if epoch is not None:
                cached = CachedPrincipal(epoch, principal, touched.expires, {"pk": token_pk})
                cached.touched_at = touched.at
                self.principals.put(key, cached)
            return principal
        touched_at = cached.touched_at
        if touched_at is None or touched_at <= now - LAST_USED_EVERY:
            cached.touched_at = now
            with Session(self.engine) as session:
                self._touch_row(session, int(cached.claims["pk"]), now)
        return cached.principal

    def _load_api_token(
        self, parts: tuple[str, str], now: datetime
    ) -> tuple[Principal, int, _Touched]:
        with Session(self.engine) as session:
            token = session.exec(select(ApiToken).where(ApiToken.token_id == parts[0])).first()
            if token is None or not secret_matches(parts[1], token.secret_hash):
                raise AuthenticationFailed(REFUSED)
            if token.revoked_at is not None or (
                token.expires_at is not None and token.expires_at <= now
            ):
                raise AuthenticationFailed("the API token was revoked or has expired")
            client = session.get(ApiClient, token.client_pk)
            if client is None or client.disabled or client.pk is None:
                raise AuthenticationFailed("the API client is disabled")
            assert token.pk is not None
            touched = _Touched(
                token.last_used_at,
                token.expires_at,
            )
            if touched.at is None or touched.at <= now - LAST_USED_EVERY:
                self._touch_row(session, token.pk, now)
                touched = _Touched(now, touched.expires)
            principal = Principal(
                PrincipalKind.API_CLIENT,
                client.pk,
                client.name,
                {client.institution_pk: _parse_roles(client.roles)},
                scopes=_parse_scopes(token.scopes),
            )
            return principal, token.pk, touched

    def _touch_row(self, session: Session, token_pk: int, now: datetime) -> None:
        """`last_used_at`, written at most once a minute (a write per request would make every
        read a write); it is not among what bumps the revocation epoch."""
        column = col(ApiToken.last_used_at)
        session.execute(
            update(ApiToken)
            .where(col(ApiToken.pk) == token_pk)
            .where(or_(column.is_(None), column <= now - LAST_USED_EVERY))
            .values(last_used_at=now)
        )
        session.commit()

    def _session(self, credentials: Credentials, now: datetime) -> Principal:
        assert credentials.session is not None
        principal, claims = self._ferry_token(credentials.session, TokenType.SESSION, now)
        if credentials.method not in SAFE_METHODS:
            expected = claims.get("csrf")
            offered = credentials.csrf or ""
            # As bytes: compare_digest refuses non-ASCII text, and a header or form may hold it.
            if not isinstance(expected, str) or not hmac.compare_digest(
                expected.encode(), offered.encode()
            ):
                raise AuthenticationFailed(f"the {CSRF_HEADER} header is missing or wrong")
        return principal

    def membership_claims(self, user_pk: int) -> dict[str, Any]:
        """`inst` and `roles` claims by institution code, for clients such as the viewer."""
        with Session(self.engine) as session:
            memberships = _memberships(session, user_pk)
            found = select(Institution).where(col(Institution.pk).in_(list(memberships)))
            rows = session.exec(found).all()
        codes = {row.pk: row.code for row in rows if row.pk is not None}
        roles = {codes[pk]: sorted(r.value for r in memberships[pk]) for pk in codes}
        return {"inst": sorted(roles), "roles": roles}

    def issue_access_token(self, user: User, now: datetime, sid: str | None = None) -> str:
        """An access token of sign-in session `sid`; of a session of its own without one."""
        assert user.pk is not None
        if sid is None:
            lifetime = timedelta(seconds=self.config.access_token_seconds)
            sid = open_session(self.engine, user.pk, lifetime, now)
        return issue_token(
            self.keys,
            self.config,
            subject=str(user.pk),
            token_type=TokenType.ACCESS,
            version=user.token_version,
            lifetime=timedelta(seconds=self.config.access_token_seconds),
            now=now,
            claims={**self.membership_claims(user.pk), "sid": sid},
        )

    def issue_study_token(
        self,
        user: User,
        studies: list[str],
        now: datetime,
        lifetime: timedelta,
        sid: str | None = None,
    ) -> str:
        """A short-lived access token that reads only these studies (a viewer link).

        It belongs to the sign-in session `sid` that asked for it, so signing out ends it too;
        without one (a person acting from the command line) it gets a session of its own.
        """
        assert user.pk is not None
        if sid is None:
            sid = open_session(self.engine, user.pk, lifetime, now)
        return issue_token(
            self.keys,
            self.config,
            subject=str(user.pk),
            token_type=TokenType.ACCESS,
            version=user.token_version,
            lifetime=lifetime,
            now=now,
            claims={STUDIES_CLAIM: sorted(studies), "sid": sid},
        )

    def issue_session(
        self, user: User, now: datetime, identity: ExternalIdentity | None = None
    ) -> SessionGrant:
        """The portal's session; with a provider's `identity`, its memberships are the
        provider's mapping, as with that provider's bearer tokens."""
        assert user.pk is not None
        csrf = secrets.token_urlsafe(32)
        lifetime = self.config.refresh_token_seconds
        external: dict[str, Any] = {}
        if identity is not None:
            external = {"issuer": identity.issuer, "memberships": identity.memberships}
        sid = open_session(self.engine, user.pk, timedelta(seconds=lifetime), now, **external)
        token = issue_token(
            self.keys,
            self.config,
            subject=str(user.pk),
            token_type=TokenType.SESSION,
            version=user.token_version,
            lifetime=timedelta(seconds=lifetime),
            now=now,
            claims={"csrf": csrf, "sid": sid},
        )
        return SessionGrant(token, csrf, lifetime, user.pk, user.email)
