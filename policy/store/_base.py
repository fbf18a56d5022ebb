"""Shared pieces of the policy storage adapter: its errors, sessions and value checks.

FerryError
├── NotFound
│   └── UnknownRecord       no such institution, user, client, node, rule (or not yours to see)
├── InvalidQuery
│   └── InvalidRecord       a value the policy model cannot hold (bad code, timezone, role)
└── DuplicateRecord         a code, email or AE title that is already taken
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from foundation.errors import FerryError, InvalidQuery, NotFound
from policy.roles import Role, Scope, parse_roles, parse_scopes

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class UnknownRecord(NotFound):
    pass


class InvalidRecord(InvalidQuery):
    pass


class DuplicateRecord(FerryError):
    pass


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def writing(engine: Engine, conflict: str) -> Iterator[Session]:
    """A session committed on success; a unique-constraint race becomes DuplicateRecord."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except IntegrityError as error:
            session.rollback()
            raise DuplicateRecord(conflict) from error


def reading(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def check_code(code: str) -> str:
    if not _CODE.match(code):
        raise InvalidRecord(
            f"code {code!r} must be 1-32 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return code


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidRecord(
            f"unknown timezone {name!r}; use an IANA name like Europe/Paris"
        ) from None
    return name


def check_email(email: str) -> str:
    email = email.strip()
    if len(email) > 320 or not _EMAIL.match(email) or not email.isprintable():
        raise InvalidRecord(f"{email!r} is not an email address")
    return email.lower()


def check_text(value: str, field: str, limit: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidRecord(f"{field} must not be empty")
    if len(value) > limit or not value.isprintable():
        raise InvalidRecord(f"{field} must be at most {limit} printable characters")
    return value


def roles_text(roles: str | frozenset[Role] | list[str]) -> str:
    """Roles in their stored form, sorted; ValueError on an unknown role becomes InvalidRecord."""
    try:
        parsed = parse_roles(roles if isinstance(roles, str) else ",".join(roles))
    except ValueError as error:
        raise InvalidRecord(str(error)) from None
    return ",".join(sorted(role.value for role in parsed))


def scopes_text(scopes: str | frozenset[Scope] | list[str]) -> str:
    try:
        parsed = parse_scopes(scopes if isinstance(scopes, str) else ",".join(scopes))
    except ValueError as error:
        raise InvalidRecord(str(error)) from None
    if not parsed:
        raise InvalidRecord("a token needs at least one scope")
    return ",".join(sorted(scope.value for scope in parsed))
