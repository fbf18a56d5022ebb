"""Institutions, users and API tokens written straight into the tables, for authentication tests."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from policy import passwords
from policy.models import ApiClient, ApiToken, Institution, Membership, User, UserStatus
from policy.passwords import hash_password

PASSWORD = "correct horse battery staple"


def add_institution(engine: Engine, code: str) -> int:
    with Session(engine) as session:
        row = Institution(code=code, name=f"Institution {code}")
        session.add(row)
        session.commit()
        assert row.pk is not None
        return row.pk


def add_user(
    engine: Engine,
    email: str,
    *,
    password: str | None = PASSWORD,
    status: UserStatus = UserStatus.ACTIVE,
    memberships: dict[int, str] | None = None,
    system_admin: bool = False,
) -> int:
    with Session(engine) as session:
        user = User(
            email=email,
            status=status,
            system_admin=system_admin,
            password_hash=hashed_password(password) if password else "",
        )
        session.add(user)
        session.flush()
        assert user.pk is not None
        for institution_pk, roles in (memberships or {}).items():
            session.add(Membership(user_pk=user.pk, institution_pk=institution_pk, roles=roles))
        session.commit()
        return user.pk


def hashed_password(password: str) -> str:
    """One argon2id hash per password and hashing parameters a test process: it is slow on
    purpose (tenths of a second with the production parameters), and a user row needs a valid
    hash, not a salt of its own. The parameters are the test process's (cheap, see
    tests/conftest.py `_passwords_hashed_cheaply`) unless the test is about passwords, and a
    sign-in verifies with the same ones; tests/policy/test_passwords.py and test_store.py hash
    afresh."""
    hasher = passwords._hasher()
    return _hashed_with(password, (hasher.time_cost, hasher.memory_cost, hasher.parallelism))


@functools.cache
def _hashed_with(password: str, parameters: tuple[int, int, int]) -> str:
    return hash_password(password)


def change_user(engine: Engine, pk: int, **values: Any) -> None:
    with Session(engine) as session:
        user = session.get(User, pk)
        assert user is not None
        for name, value in values.items():
            setattr(user, name, value)
        session.add(user)
        session.commit()


def get_user(engine: Engine, pk: int) -> User:
    with Session(engine) as session:
        user = session.get(User, pk)
        assert user is not None
        session.expunge(user)
        return user


def add_api_token(
    engine: Engine,
    institution_pk: int,
    *,
    roles: str = "receiver",
    scopes: str = "read",
    expires_at: datetime | None = None,
) -> tuple[str, int, int]:
    """The plaintext token `ferry_<id>_<secret>`, the client's pk and the token row's pk."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with Session(engine) as session:
        client = ApiClient(name="ai-tool", institution_pk=institution_pk, roles=roles)
        session.add(client)
        session.flush()
        assert client.pk is not None
        token = ApiToken(
            client_pk=client.pk,
            token_id=token_id,
            secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
            scopes=scopes,
            expires_at=expires_at,
        )
        session.add(token)
        session.commit()
        assert token.pk is not None
        return f"ferry_{token_id}_{secret}", client.pk, token.pk
