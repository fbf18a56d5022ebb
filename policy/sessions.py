"""Sign-in sessions, revocable on the server: one row per sign-in, named by its `sid`.

Every token of a sign-in carries the session's id (`sid` claim): the portal's session cookie,
the access tokens issued by the token endpoint, and (as their family) the refresh tokens.
Authentication looks the row up with the user, so a logout (or a revocation) ends every copy of
every token of that sign-in at once, in every worker: what authentication keeps between requests
serves only while the revocation epoch (`policy.auth_epoch`) is unchanged, and revoking a
session bumps it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import Field, Session, SQLModel, col, select


def _now() -> datetime:
    return datetime.now(UTC)


class UserSession(SQLModel, table=True):
    """One sign-in; `revoked_at` set by logout ends it everywhere."""

    __tablename__ = "user_session"

    pk: int | None = Field(default=None, primary_key=True)
    sid: str = Field(max_length=32, unique=True)
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    created_at: datetime = Field(default_factory=_now)
    expires_at: datetime
    revoked_at: datetime | None = Field(default=None)


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 22 characters, 128 bits


def open_session(
    engine: Engine, user_pk: int, lifetime: timedelta, now: datetime, sid: str | None = None
) -> str:
    """A new live session for the user; its id goes into every token of this sign-in."""
    sid = sid or new_session_id()
    with Session(engine) as session:
        session.add(
            UserSession(sid=sid, user_pk=user_pk, created_at=now, expires_at=now + lifetime)
        )
        session.commit()
    return sid


def session_is_live(session: Session, sid: str, user_pk: int, now: datetime) -> bool:
    """Whether `sid` names a session of this user that is neither revoked nor expired."""
    return live_session_expiry(session, sid, user_pk, now) is not None


def live_session_expiry(session: Session, sid: str, user_pk: int, now: datetime) -> datetime | None:
    """When the live session `sid` of this user expires; None if it is revoked, expired or not
    this user's."""
    row = session.exec(select(UserSession).where(UserSession.sid == sid)).first()
    if row is None or row.user_pk != user_pk or row.revoked_at is not None:
        return None
    expires = row.expires_at
    return expires if expires > now else None


def extend_session(session: Session, sid: str, until: datetime) -> None:
    """A refresh renews the sign-in: the session lives as long as its newest refresh token."""
    session.execute(
        update(UserSession)
        .where(col(UserSession.sid) == sid, col(UserSession.revoked_at).is_(None))
        .values(expires_at=until)
    )


def revoke_session(engine: Engine, sid: str, now: datetime) -> bool:
    """Logout: the session and every token carrying its id stop working. False if unknown."""
    with Session(engine) as session:
        done = session.execute(
            update(UserSession)
            .where(col(UserSession.sid) == sid, col(UserSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        session.commit()
    return bool(done.rowcount)  # type: ignore[attr-defined]
