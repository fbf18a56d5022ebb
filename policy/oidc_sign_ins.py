"""Portal sign-ins under way at a provider: state, nonce and PKCE verifier, each used once.

`begin` writes a row named by the SHA-256 of a fresh `state` (OpenID Connect Core 1.0 §3.1.2.1)
and hands the state back: the portal puts it in the redirect and in a short-lived HttpOnly
cookie, so the answer is accepted only in the browser that asked, and only once (`take` marks
the row used in the same statement that finds it). Rows live in the database, so any worker
may take the answer that another one started; old rows are deleted as new ones are begun.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlmodel import Field, Session, SQLModel, col, select

from foundation.errors import AuthenticationFailed

LIFETIME = timedelta(minutes=10)  # time to sign in at the provider; the cookie lives as long
MAX_NEXT_LENGTH = 1024


def new_secret() -> str:
    """A state, nonce or PKCE code verifier: 256 random bits, 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


class SignInNotUnderWay(AuthenticationFailed):
    """No sign-in of this browser waits for this answer: unknown, used, expired or elsewhere."""


class OidcSignIn(SQLModel, table=True):
    """One sign-in sent to a provider and not yet back."""

    __tablename__ = "oidc_sign_in"

    pk: int | None = Field(default=None, primary_key=True)
    state_hash: str = Field(max_length=64, unique=True)
    provider: str = Field(max_length=32)
    nonce: str = Field(max_length=64)
    code_verifier: str = Field(max_length=128)
    next_path: str = Field(max_length=MAX_NEXT_LENGTH)
    created_at: datetime
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = Field(default=None)


@dataclass(frozen=True)
class PendingSignIn:
    state: str
    nonce: str
    code_verifier: str
    next_path: str


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def begin(engine: Engine, provider: str, next_path: str, now: datetime) -> PendingSignIn:
    """A new sign-in at `provider` that returns to `next_path` (already a safe local path)."""
    pending = PendingSignIn(new_secret(), new_secret(), new_secret(), next_path[:MAX_NEXT_LENGTH])
    with Session(engine) as session:
        session.execute(delete(OidcSignIn).where(col(OidcSignIn.expires_at) < now))
        session.add(
            OidcSignIn(
                state_hash=_hash(pending.state),
                provider=provider,
                nonce=pending.nonce,
                code_verifier=pending.code_verifier,
                next_path=pending.next_path,
                created_at=now,
                expires_at=now + LIFETIME,
            )
        )
        session.commit()
    return pending


def take(engine: Engine, provider: str, state: str, now: datetime) -> PendingSignIn:
    """The sign-in `state` names, marked used; SignInNotUnderWay if it is not live here."""
    digest = _hash(state)
    with Session(engine) as session:
        taken = session.execute(
            update(OidcSignIn)
            .where(
                col(OidcSignIn.state_hash) == digest,
                col(OidcSignIn.provider) == provider,
                col(OidcSignIn.used_at).is_(None),
                col(OidcSignIn.expires_at) > now,
            )
            .values(used_at=now)
        )
        row = session.exec(select(OidcSignIn).where(OidcSignIn.state_hash == digest)).first()
        found = (
            None
            if row is None
            else PendingSignIn(state, row.nonce, row.code_verifier, row.next_path)
        )
        session.commit()
    if not taken.rowcount or found is None:  # type: ignore[attr-defined]
        raise SignInNotUnderWay("this sign-in is not under way: it was used, or it is too old")
    return found
