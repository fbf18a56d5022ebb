"""Sign-in sessions, revocable on the server: one row per sign-in, named by its `sid`.

Every token of a sign-in carries the session's id (`sid` claim): the portal's session cookie,
the access tokens issued by the token endpoint, and (as their family) the refresh tokens.
Authentication looks the row up with the user, so a logout (or a revocation) ends every copy of
every token of that sign-in at once, in every worker: what authentication keeps between requests
serves only while the revocation epoch (`policy.auth_epoch`) is unchanged, and revoking a
session bumps it.

A sign-in through an OpenID Connect provider's button keeps the provider's issuer and the
memberships its mapping gave (`external_memberships`, institution code -> roles): every token of
that sign-in has those memberships, and none of the user's own, as a provider's bearer token.

Ended sessions (revoked, or expired) are removed by the job worker's periodic sweep
(`session_sweeper`, at most once an hour): a missing row is an ended session to everything that
reads one, so removing it changes no answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Column, Engine, Text, delete, or_, update
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
    issuer: str | None = Field(default=None, max_length=512)  # set: an OpenID Connect sign-in
    external_memberships: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    def mapped_memberships(self) -> dict[str, list[str]]:
        """The provider's memberships of this sign-in (code -> role names); {} for none."""
        found = orjson.loads(self.external_memberships or "{}")
        return found if isinstance(found, dict) else {}


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 22 characters, 128 bits


def open_session(
    engine: Engine,
    user_pk: int,
    lifetime: timedelta,
    now: datetime,
    sid: str | None = None,
    *,
    issuer: str | None = None,
    memberships: Mapping[str, frozenset[str]] | None = None,
) -> str:
    """A new live session for the user; its id goes into every token of this sign-in. With an
    `issuer`, its memberships are the provider's (`memberships`), not the user's own."""
    sid = sid or new_session_id()
    external = None
    if issuer is not None:
        external = orjson.dumps(
            {code: sorted(roles) for code, roles in (memberships or {}).items()}
        )
    with Session(engine) as session:
        session.add(
            UserSession(
                sid=sid,
                user_pk=user_pk,
                created_at=now,
                expires_at=now + lifetime,
                issuer=issuer,
                external_memberships=external.decode() if external else None,
            )
        )
        session.commit()
    return sid


def session_is_live(session: Session, sid: str, user_pk: int, now: datetime) -> bool:
    """Whether `sid` names a session of this user that is neither revoked nor expired."""
    return live_session_expiry(session, sid, user_pk, now) is not None


def live_session_expiry(session: Session, sid: str, user_pk: int, now: datetime) -> datetime | None:
    """When the live session `sid` of this user expires; None if it is revoked, expired or not
    this user's."""
    row = live_session(session, sid, user_pk, now)
    return row.expires_at if row is not None else None


def live_session(session: Session, sid: str, user_pk: int, now: datetime) -> UserSession | None:
    """The live session `sid` of this user; None if it is revoked, expired or not this user's."""
    row = session.exec(select(UserSession).where(UserSession.sid == sid)).first()
    if row is None or row.user_pk != user_pk or row.revoked_at is not None:
        return None
    return row if row.expires_at > now else None


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


SWEEP_BATCH = 1000
SWEEP_INTERVAL = timedelta(hours=1)


def remove_ended_sessions(engine: Engine, now: datetime, batch: int = SWEEP_BATCH) -> int:
    """Delete up to `batch` sessions revoked or expired by `now`; how many went."""
    ended = or_(col(UserSession.expires_at) <= now, col(UserSession.revoked_at).is_not(None))
    with Session(engine) as session:
        pks = list(session.exec(select(UserSession.pk).where(ended).limit(batch)))
        if not pks:
            # No DELETE at all: on PostgreSQL the revocation epoch's statement trigger would
            # fire even for no row, and every process would rebuild its kept principals.
            return 0
        session.execute(delete(UserSession).where(col(UserSession.pk).in_(pks)))
        session.commit()
    return len(pks)


def session_sweeper(
    engine: Engine,
    clock: Callable[[], datetime],
    interval: timedelta = SWEEP_INTERVAL,
    batch: int = SWEEP_BATCH,
) -> Callable[[], int | None]:
    """A periodic tick for `foundation.jobs.Worker(ticks=[...])`: at most once per `interval`
    of `clock`'s time, every ended session goes (`batch` a statement); None when not yet due."""
    last: list[datetime | None] = [None]

    def sweep() -> int | None:
        now = clock()
        if last[0] is not None and now - last[0] < interval:
            return None
        last[0] = now
        removed = done = remove_ended_sessions(engine, now, batch)
        while done == batch:
            done = remove_ended_sessions(engine, now, batch)
            removed += done
        return removed

    return sweep
