"""API clients for AI and research tools, and their tokens: shown once, kept as a sha256 hash.

A token reads `ferry_<token_id>_<secret>`: the id finds the row, the secret is compared by hash.
The secret is 256 random bits, so a fast hash is enough; passwords are another matter.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import col, select

from policy.models import ApiClient, ApiToken, Institution
from policy.roles import Role, Scope
from policy.store._base import (
    InvalidRecord,
    UnknownRecord,
    check_text,
    reading,
    roles_text,
    scopes_text,
    utc_now,
    writing,
)

TOKEN_PREFIX = "ferry"


def hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """The only moment the whole token exists outside its holder."""

    token: str
    record: ApiToken


def create_api_client(
    engine: Engine, name: str, institution_pk: int, roles: str | frozenset[Role] | list[str]
) -> ApiClient:
    stored = roles_text(roles)
    if not stored:
        raise InvalidRecord("an API client needs at least one role")
    client = ApiClient(
        name=check_text(name, "name", 128, required=True),
        institution_pk=institution_pk,
        roles=stored,
    )
    with writing(engine, "the API client changed meanwhile") as session:
        if session.get(Institution, institution_pk) is None:
            raise UnknownRecord(f"no institution {institution_pk}")
        session.add(client)
    return client


def issue_api_token(
    engine: Engine,
    client_pk: int,
    scopes: str | frozenset[Scope] | list[str] = "read",
    expires_at: datetime | None = None,
) -> IssuedToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiToken(
        client_pk=client_pk,
        token_id=token_id,
        secret_hash=hash_token_secret(secret),
        scopes=scopes_text(scopes),
        expires_at=expires_at,
    )
    if expires_at is not None and expires_at <= utc_now():
        raise InvalidRecord("a token's expiry must be in the future")
    with writing(engine, "token id collision; try again") as session:
        client = session.get(ApiClient, client_pk)
        if client is None:
            raise UnknownRecord(f"no API client {client_pk}")
        if client.disabled:
            raise InvalidRecord(f"API client {client_pk} is revoked")
        session.add(record)
    return IssuedToken(f"{TOKEN_PREFIX}_{token_id}_{secret}", record)


def get_api_client(engine: Engine, pk: int) -> ApiClient:
    with reading(engine) as session:
        client = session.get(ApiClient, pk)
    if client is None:
        raise UnknownRecord(f"no API client {pk}")
    return client


def list_api_clients(
    engine: Engine, institution_pks: Collection[int] | None = None
) -> list[ApiClient]:
    query = select(ApiClient).order_by(col(ApiClient.pk))
    if institution_pks is not None:
        query = query.where(col(ApiClient.institution_pk).in_(list(institution_pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def list_api_tokens(engine: Engine, client_pk: int) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.client_pk == client_pk).order_by(col(ApiToken.pk))
    with reading(engine) as session:
        return list(session.exec(query))


def revoke_api_client(engine: Engine, pk: int, now: datetime | None = None) -> ApiClient:
    """The client and every token it holds stop working at once."""
    now = now or utc_now()
    with writing(engine, "the API client changed meanwhile") as session:
        client = session.get(ApiClient, pk)
        if client is None:
            raise UnknownRecord(f"no API client {pk}")
        client.disabled = True
        session.add(client)
        live = select(ApiToken).where(ApiToken.client_pk == pk, col(ApiToken.revoked_at).is_(None))
        for token in session.exec(live):
            token.revoked_at = now
            session.add(token)
    return client


def revoke_api_token(
    engine: Engine, client_pk: int, token_id: str, now: datetime | None = None
) -> ApiToken:
    query = select(ApiToken).where(ApiToken.client_pk == client_pk, ApiToken.token_id == token_id)
    with writing(engine, "the token changed meanwhile") as session:
        token = session.exec(query).first()
        if token is None:
            raise UnknownRecord(f"API client {client_pk} has no token {token_id!r}")
        if token.revoked_at is None:
            token.revoked_at = now or utc_now()
            session.add(token)
    return token
