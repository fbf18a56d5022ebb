"""Password sign-in: argon2id hashes (RFC 9106) and lockout after repeated failures.

Every refusal looks the same from outside (one message, about the same time), whether the email
is unknown, the password wrong, the account locked, pending or disabled: an attacker learns nothing
about which accounts exist. The failure counter lives on the user row, so the lockout holds across
all workers of a scaled deployment.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from foundation.errors import AuthenticationFailed
from policy.config import AuthConfig
from policy.models import User, UserStatus

SIGN_IN_REFUSED = "email or password is incorrect, or the account cannot sign in now"
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" is a denial of service
MIN_PASSWORD_LENGTH = 12


class SignInRefused(AuthenticationFailed):
    """A refused password sign-in. Its message is the one every refusal shows; `why` (for the
    audit trail only, never the answer) and `user_pk` (the account tried, None if unknown)."""

    def __init__(self, why: str, user_pk: int | None = None) -> None:
        super().__init__(SIGN_IN_REFUSED)
        self.why = why
        self.user_pk = user_pk


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2-cffi's defaults are RFC 9106's second recommended option (argon2id, 64 MiB)."""
    return PasswordHasher()


@functools.cache
def _decoy_hash() -> str:
    """Checked when the email is unknown, so that case costs as much as a wrong password."""
    return _hasher().hash("no account has this password")


def hash_password(password: str) -> str:
    """An argon2id PHC string (`$argon2id$v=19$m=...`), salted, to store in `User.password_hash`."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"a password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if the password matches; a missing or malformed hash never matches."""
    if not password_hash or len(password) > MAX_PASSWORD_LENGTH:
        _verify_decoy(password[:MAX_PASSWORD_LENGTH])
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_decoy(password: str) -> None:
    with contextlib.suppress(VerificationError):
        _hasher().verify(_decoy_hash(), password)


def authenticate_password(
    engine: Engine, config: AuthConfig, email: str, password: str, now: datetime
) -> User:
    """The active user with this email and password, or SignInRefused (AuthenticationFailed).

    `now` is passed in (never read here) so lockout expiry can be tested without sleeping.
    """
    with Session(engine) as session:
        wanted = email.strip().lower()
        user = session.exec(select(User).where(func.lower(User.email) == wanted)).first()
        if user is None:
            _verify_decoy(password[:MAX_PASSWORD_LENGTH])
            raise SignInRefused("no account has this email")
        matches = verify_password(user.password_hash, password)
        locked_until = user.locked_until
        if locked_until is not None and locked_until > now:
            # not counted: a lock is not extended
            raise SignInRefused("the account is locked after repeated failures", user.pk)
        if not matches:
            _record_failure(session, user, config, now)
            raise SignInRefused("wrong password", user.pk)
        if user.status != UserStatus.ACTIVE:
            raise SignInRefused(f"the account is {user.status}", user.pk)
        _record_success(session, user, password)
        session.refresh(user)
        session.expunge(user)
        return user


def _record_failure(session: Session, user: User, config: AuthConfig, now: datetime) -> None:
    """Counted in SQL (`failed_logins + 1`), so concurrent guesses on many workers all count."""
    session.execute(
        update(User)
        .where(col(User.pk) == user.pk)
        .values(failed_logins=col(User.failed_logins) + 1)
    )
    session.execute(
        update(User)
        .where(col(User.pk) == user.pk, col(User.failed_logins) >= config.login_max_failures)
        .values(
            failed_logins=0,
            locked_until=now + timedelta(seconds=config.login_lockout_seconds),
        )
    )
    session.commit()


def _record_success(session: Session, user: User, password: str) -> None:
    values: dict[str, object] = {"failed_logins": 0, "locked_until": None}
    if _hasher().check_needs_rehash(user.password_hash):
        values["password_hash"] = _hasher().hash(password)  # parameters raised since it was set
    session.execute(update(User).where(col(User.pk) == user.pk).values(**values))
    session.commit()
