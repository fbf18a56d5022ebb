"""Users, their memberships (user × institution × roles), and registrations awaiting approval."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from policy.models import Institution, Membership, Registration, User, UserStatus
from policy.passwords import hash_password, verify_password
from policy.roles import Role, parse_roles
from policy.store._base import (
    DuplicateRecord,
    InvalidRecord,
    UnknownRecord,
    check_email,
    check_text,
    reading,
    roles_text,
    utc_now,
    writing,
)


def hash_new_password(password: str) -> str:
    """argon2id by way of policy.passwords, whose length rule becomes an InvalidRecord here."""
    try:
        return hash_password(password)
    except ValueError as error:
        raise InvalidRecord(str(error)) from None


def create_user(
    engine: Engine,
    email: str,
    *,
    name: str = "",
    password: str | None = None,
    status: UserStatus = UserStatus.ACTIVE,
    system_admin: bool = False,
) -> User:
    """Without a password the user can sign in only through an identity provider."""
    email = check_email(email)
    user = User(
        email=email,
        name=check_text(name, "name", 256),
        status=status,
        system_admin=system_admin,
        password_hash=hash_new_password(password) if password is not None else "",
    )
    with writing(engine, f"a user with email {email!r} exists") as session:
        if session.exec(select(User).where(User.email == email)).first():
            raise DuplicateRecord(f"a user with email {email!r} exists")
        session.add(user)
    return user


def get_user(engine: Engine, pk: int) -> User:
    with reading(engine) as session:
        user = session.get(User, pk)
    if user is None:
        raise UnknownRecord(f"no user {pk}")
    return user


def find_user(engine: Engine, email: str) -> User:
    wanted = email.strip().lower()
    if not wanted.isprintable():  # PostgreSQL refuses NUL in a literal: nobody has such an email
        raise UnknownRecord(f"no user with email {email!r}")
    with reading(engine) as session:
        user = session.exec(select(User).where(User.email == wanted)).first()
    if user is None:
        raise UnknownRecord(f"no user with email {email!r}")
    return user


def list_users(engine: Engine, institution_pks: Collection[int] | None = None) -> list[User]:
    """All users, or those with a membership in one of `institution_pks`."""
    query = select(User).order_by(col(User.email))
    if institution_pks is not None:
        members = select(Membership.user_pk).where(
            col(Membership.institution_pk).in_(list(institution_pks))
        )
        query = query.where(col(User.pk).in_(members))
    with reading(engine) as session:
        return list(session.exec(query))


def update_user(
    engine: Engine,
    pk: int,
    *,
    name: str | None = None,
    status: UserStatus | None = None,
    system_admin: bool | None = None,
    password: str | None = None,
) -> User:
    """Disabling a user, or changing their password, ends their live tokens at once."""
    password_hash = hash_new_password(password) if password is not None else None
    with writing(engine, "the user changed meanwhile") as session:
        user = session.get(User, pk)
        if user is None:
            raise UnknownRecord(f"no user {pk}")
        if name is not None:
            user.name = check_text(name, "name", 256)
        if status is not None and status != user.status:
            if status is UserStatus.DISABLED:
                user.token_version += 1
            user.status = status
        if system_admin is not None:
            user.system_admin = system_admin
        if password_hash is not None:
            user.password_hash = password_hash
            user.failed_logins, user.locked_until = 0, None
            user.token_version += 1
        session.add(user)
    return user


def load_memberships(engine: Engine, user_pk: int) -> dict[int, frozenset[Role]]:
    """institution pk -> roles, as a Principal holds them."""
    query = select(Membership).where(Membership.user_pk == user_pk)
    with reading(engine) as session:
        return {m.institution_pk: parse_roles(m.roles) for m in session.exec(query)}


def list_memberships(
    engine: Engine, *, user_pk: int | None = None, institution_pk: int | None = None
) -> list[Membership]:
    query = select(Membership).order_by(col(Membership.institution_pk), col(Membership.user_pk))
    if user_pk is not None:
        query = query.where(Membership.user_pk == user_pk)
    if institution_pk is not None:
        query = query.where(Membership.institution_pk == institution_pk)
    with reading(engine) as session:
        return list(session.exec(query))


def _upsert_membership(
    session: Session, user_pk: int, institution_pk: int, roles: str
) -> Membership:
    query = select(Membership).where(
        Membership.user_pk == user_pk, Membership.institution_pk == institution_pk
    )
    membership = session.exec(query).first() or Membership(
        user_pk=user_pk, institution_pk=institution_pk
    )
    membership.roles = roles
    session.add(membership)
    return membership


def set_membership(
    engine: Engine, user_pk: int, institution_pk: int, roles: str | frozenset[Role] | list[str]
) -> Membership:
    """Create or replace a user's roles in an institution.

    Authentication reads memberships afresh on every request, so a change takes effect at once
    without ending the user's sessions elsewhere.
    """
    stored = roles_text(roles)
    with writing(engine, "the membership changed meanwhile") as session:
        user = session.get(User, user_pk)
        if user is None:
            raise UnknownRecord(f"no user {user_pk}")
        if session.get(Institution, institution_pk) is None:
            raise UnknownRecord(f"no institution {institution_pk}")
        membership = _upsert_membership(session, user_pk, institution_pk, stored)
    return membership


def remove_membership(engine: Engine, user_pk: int, institution_pk: int) -> None:
    query = select(Membership).where(
        Membership.user_pk == user_pk, Membership.institution_pk == institution_pk
    )
    with writing(engine, "the membership changed meanwhile") as session:
        membership = session.exec(query).first()
        if membership is None:
            raise UnknownRecord(f"user {user_pk} is not a member of institution {institution_pk}")
        session.delete(membership)


# Called inside the transaction that creates or decides a registration, so that what follows
# from it (the emails an edge queues as outbox jobs) is written with it or not at all.
Then = Callable[[Session, Registration], None]


def register(
    engine: Engine,
    email: str,
    name: str,
    password: str,
    institution_pk: int,
    then: Then | None = None,
) -> Registration | None:
    """A new person asks to join: a pending user and a pending registration.

    An email already known gets no new registration (None), so that the public endpoint answers
    both alike and never tells a stranger who has an account.
    """
    email = check_email(email)
    user = User(
        email=email,
        name=check_text(name, "name", 256, required=True),
        status=UserStatus.PENDING,
        password_hash=hash_new_password(password),
    )
    with writing(engine, f"a user with email {email!r} exists") as session:
        if session.get(Institution, institution_pk) is None:
            raise UnknownRecord(f"no institution {institution_pk}")
        if session.exec(select(User).where(User.email == email)).first():
            return None
        session.add(user)
        session.flush()
        assert user.pk is not None
        registration = Registration(user_pk=user.pk, institution_pk=institution_pk)
        session.add(registration)
        session.flush()
        if then is not None:
            then(session, registration)
    return registration


def get_registration(engine: Engine, pk: int) -> Registration:
    with reading(engine) as session:
        registration = session.get(Registration, pk)
    if registration is None:
        raise UnknownRecord(f"no registration {pk}")
    return registration


def list_registrations(
    engine: Engine, institution_pks: Collection[int] | None = None, status: str | None = "pending"
) -> list[tuple[Registration, User]]:
    """The approval queue, oldest first, with each applicant."""
    query = select(Registration, User).join(User, col(User.pk) == Registration.user_pk)
    if institution_pks is not None:
        query = query.where(col(Registration.institution_pk).in_(list(institution_pks)))
    if status is not None:
        query = query.where(Registration.status == status)
    with reading(engine) as session:
        return list(
            session.exec(query.order_by(col(Registration.requested_at), col(Registration.pk)))
        )


def _decide_registration(session: Session, pk: int) -> tuple[Registration, User]:
    registration = session.get(Registration, pk)
    if registration is None:
        raise UnknownRecord(f"no registration {pk}")
    if registration.status != "pending":
        raise DuplicateRecord(f"registration {pk} was already {registration.status}")
    user = session.get(User, registration.user_pk)
    assert user is not None
    return registration, user


def approve_registration(
    engine: Engine,
    pk: int,
    roles: str | frozenset[Role] | list[str],
    decided_by_pk: int | None,
    now: datetime | None = None,
    then: Then | None = None,
) -> Registration:
    """Membership with `roles`, the user active, and the confirmation email recorded as due."""
    stored = roles_text(roles)
    if not stored:
        raise InvalidRecord("an approval needs at least one role")
    now = now or utc_now()
    with writing(engine, f"registration {pk} changed meanwhile") as session:
        registration, user = _decide_registration(session, pk)
        _upsert_membership(session, user.pk or 0, registration.institution_pk, stored)
        registration.status, registration.roles = "approved", stored
        registration.decided_by_pk, registration.decided_at = decided_by_pk, now
        registration.confirmation_recorded_at = now
        if user.status is UserStatus.PENDING:
            user.status = UserStatus.ACTIVE
        session.add_all([registration, user])
        if then is not None:
            then(session, registration)
    return registration


def reject_registration(
    engine: Engine,
    pk: int,
    decided_by_pk: int | None,
    note: str = "",
    now: datetime | None = None,
    then: Then | None = None,
) -> Registration:
    """The user stays pending (unable to sign in) unless another institution accepted them."""
    note = check_text(note, "note", 1024)
    with writing(engine, f"registration {pk} changed meanwhile") as session:
        registration, _user = _decide_registration(session, pk)
        registration.status, registration.note = "rejected", note
        registration.decided_by_pk, registration.decided_at = decided_by_pk, now or utc_now()
        session.add(registration)
        if then is not None:
            then(session, registration)
    return registration


def own_registration(
    engine: Engine, email: str, password: str
) -> tuple[Registration, Institution] | None:
    """The newest registration of a person who is not (yet) active, if the password is theirs.

    For the sign-in page to tell someone who registered how their registration stands: only
    the person's own password opens it, so a stranger learns nothing about the email.
    """
    with reading(engine) as session:
        user = session.exec(select(User).where(User.email == email.strip().lower())).first()
        if user is None or user.status == UserStatus.ACTIVE or user.pk is None:
            return None
        if not verify_password(user.password_hash, password):
            return None
        found = session.exec(
            select(Registration, Institution)
            .join(Institution, col(Institution.pk) == col(Registration.institution_pk))
            .where(Registration.user_pk == user.pk)
            .order_by(col(Registration.pk).desc())
        ).first()
        if found is None:
            return None
        registration, institution = found
        session.expunge(registration)
        session.expunge(institution)
        return registration, institution
