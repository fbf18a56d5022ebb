"""Refresh tokens (RFC 6749 §6), rotated on every use with reuse detection (RFC 9700 §4.14.2).

Opaque and stored hashed. Each use marks the token used and issues its successor in the same
family; presenting a used token again means it was copied, so the whole family is revoked and
both the thief and the owner must sign in again. A token also dies with its user's token
version (revocation), when the user is no longer active, and when its sign-in session
(`policy.sessions`, whose id is the family) is revoked by a logout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import Field, Session, SQLModel, col, select

from foundation.errors import AuthenticationFailed
from policy._opaque import new_opaque_token, secret_matches, split_opaque_token
from policy.models import User, UserStatus
from policy.sessions import UserSession, extend_session, session_is_live

REFRESH_TOKEN_PREFIX = "ferry_rt_"
REFUSED = "the refresh token is not valid; sign in again"


def _now() -> datetime:
    return datetime.now(UTC)


class RefreshToken(SQLModel, table=True):
    """One link of a rotation chain; `family` ties together every token of one sign-in."""

    __tablename__ = "refresh_token"

    pk: int | None = Field(default=None, primary_key=True)
    token_id: str = Field(max_length=32, unique=True)
    secret_hash: str = Field(max_length=128)
    family: str = Field(max_length=32, index=True)
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    token_version: int = Field(default=0)
    expires_at: datetime
    used_at: datetime | None = Field(default=None)
    revoked_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=_now)


def _add(
    session: Session, user: User, family: str | None, lifetime: timedelta, now: datetime
) -> tuple[str, str]:
    """The new token's plaintext and its family."""
    assert user.pk is not None
    token = new_opaque_token(REFRESH_TOKEN_PREFIX)
    row = RefreshToken(
        token_id=token.token_id,
        secret_hash=token.secret_hash,
        family=family or token.token_id,
        user_pk=user.pk,
        token_version=user.token_version,
        expires_at=now + lifetime,
        created_at=now,
    )
    session.add(row)
    return token.plaintext, row.family


def issue_refresh_token(
    engine: Engine, user: User, lifetime: timedelta, now: datetime, sid: str | None = None
) -> str:
    """The first token of a new family, after a sign-in: the family is the session's id.

    Without `sid` a session is opened here, named by the new family.
    """
    assert user.pk is not None
    with Session(engine) as session:
        plaintext, family = _add(session, user, sid, lifetime, now)
        if sid is None:
            session.add(
                UserSession(sid=family, user_pk=user.pk, created_at=now, expires_at=now + lifetime)
            )
        session.commit()
    return plaintext


def _find(session: Session, presented: str) -> RefreshToken | None:
    parts = split_opaque_token(REFRESH_TOKEN_PREFIX, presented)
    if parts is None:
        return None
    row = session.exec(select(RefreshToken).where(RefreshToken.token_id == parts[0])).first()
    return row if row is not None and secret_matches(parts[1], row.secret_hash) else None


def _revoke_family(session: Session, family: str, now: datetime) -> None:
    """Every token of the sign-in, and the sign-in session itself (its access tokens too)."""
    session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family) == family, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    session.execute(
        update(UserSession)
        .where(col(UserSession.sid) == family, col(UserSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    session.commit()


def rotate_refresh_token(
    engine: Engine, presented: str, lifetime: timedelta, now: datetime
) -> tuple[User, str, str]:
    """The user, the successor token and the session's id; the presented one is spent."""
    with Session(engine) as session:
        row = _find(session, presented)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise AuthenticationFailed(REFUSED)
        claimed = session.execute(  # one winner even when two workers race on the same token
            update(RefreshToken)
            .where(col(RefreshToken.pk) == row.pk, col(RefreshToken.used_at).is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            _revoke_family(session, row.family, now)
            raise AuthenticationFailed(REFUSED)
        user = session.get(User, row.user_pk)
        if (
            user is None
            or user.status != UserStatus.ACTIVE
            or user.token_version != row.token_version
            or not session_is_live(session, row.family, row.user_pk, now)
        ):
            session.rollback()
            _revoke_family(session, row.family, now)
            raise AuthenticationFailed(REFUSED)
        plaintext, _ = _add(session, user, row.family, lifetime, now)
        extend_session(session, row.family, now + lifetime)
        session.commit()
        session.refresh(user)
        session.expunge(user)
        return user, plaintext, row.family


def revoke_refresh_token(engine: Engine, presented: str, now: datetime) -> bool:
    """Sign-out: the presented token's whole family stops working. False if it was unknown."""
    with Session(engine) as session:
        row = _find(session, presented)
        if row is None:
            return False
        _revoke_family(session, row.family, now)
        return True
