"""The revocation epoch: bumped by the database on whatever narrows a credential, so principals
kept between requests (in every process) give way at once; routine writes leave it alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from archive.store import Archive
from ferry.settings import Settings
from foundation.errors import AuthenticationFailed
from policy.auth_epoch import read_auth_epoch
from policy.authentication import Authenticator, Credentials
from policy.models import Membership, UserStatus
from policy.sessions import revoke_session
from policy.store.clients import revoke_api_token
from policy.tokens import TokenType
from tests.conftest import fresh_database
from tests.policy._people import add_api_token, add_institution, add_user, change_user, get_user

NOW = datetime.now(UTC)
TRIGGERS = 11  # foundation/migrations/versions/perf_http_0001_auth_epoch.py


def _bearer(token: str) -> Credentials:
    return Credentials("GET", authorization=f"Bearer {token}")


@fresh_database
def test_every_trigger_survives_the_migrations(archive: Archive) -> None:
    """A later migration that rebuilds one of these tables must put its triggers back."""
    if archive.engine.dialect.name == "sqlite":
        query = (
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'auth_epoch_%'"
        )
    else:
        query = (
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE t.tgname LIKE 'auth_epoch_%' AND n.nspname = current_schema()"
        )
    with archive.engine.connect() as connection:
        assert connection.execute(text(query)).scalar() == TRIGGERS


def test_what_narrows_a_credential_bumps_the_epoch_and_routine_writes_do_not(
    archive: Archive,
) -> None:
    engine = archive.engine
    radb = add_institution(engine, "RADB")
    user = add_user(engine, "ada@example.org", memberships={radb: "viewer"})
    token, client_pk, _ = add_api_token(engine, radb)
    token_id = token.removeprefix("ferry_").split("_")[0]
    epoch = read_auth_epoch(engine)
    assert epoch is not None

    change_user(engine, user, failed_logins=3, locked_until=NOW)  # a wrong password
    assert read_auth_epoch(engine) == epoch

    for change in (
        lambda: change_user(engine, user, status=UserStatus.DISABLED),
        lambda: change_user(engine, user, token_version=7),
        lambda: _set_roles(archive, user, radb, "viewer,sender"),
        lambda: revoke_api_token(engine, client_pk, token_id, NOW),
    ):
        change()
        assert read_auth_epoch(engine) == epoch + 1
        epoch += 1


def _set_roles(archive: Archive, user_pk: int, institution_pk: int, roles: str) -> None:
    with Session(archive.engine) as session:
        row = session.exec(
            select(Membership).where(
                Membership.user_pk == user_pk, Membership.institution_pk == institution_pk
            )
        ).one()
        row.roles = roles
        session.add(row)
        session.commit()


def test_a_principal_kept_by_one_process_gives_way_to_a_logout_in_another(
    settings: Settings, archive: Archive
) -> None:
    """Two authenticators on one database stand for two HTTP processes."""
    first = Authenticator.open(settings.auth(), archive.engine)
    second = Authenticator.open(settings.auth(), archive.engine)
    pk = add_user(archive.engine, "ada@example.org")
    access = first.issue_access_token(get_user(archive.engine, pk), NOW)
    for authenticator in (first, second, first, second):  # built, then kept
        assert authenticator.authenticate(_bearer(access), NOW).id == pk

    assert second.sign_out({TokenType.ACCESS: access}, NOW) == 1

    for authenticator in (first, second):
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(_bearer(access), NOW)


def test_a_kept_principal_ends_with_its_token(settings: Settings, archive: Archive) -> None:
    authenticator = Authenticator.open(settings.auth(), archive.engine)
    pk = add_user(archive.engine, "ada@example.org")
    access = authenticator.issue_access_token(get_user(archive.engine, pk), NOW)
    assert authenticator.authenticate(_bearer(access), NOW).id == pk
    later = NOW + timedelta(seconds=settings.access_token_seconds + 120)
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(_bearer(access), later)


def test_a_revoked_session_row_bumps_the_epoch(settings: Settings, archive: Archive) -> None:
    authenticator = Authenticator.open(settings.auth(), archive.engine)
    pk = add_user(archive.engine, "ada@example.org")
    grant = authenticator.issue_session(get_user(archive.engine, pk), NOW)
    cookie = Credentials("GET", session=grant.session_token)
    assert authenticator.authenticate(cookie, NOW).id == pk
    principal = authenticator.authenticate(cookie, NOW)
    assert principal.session_id is not None
    before = read_auth_epoch(archive.engine)
    assert revoke_session(archive.engine, principal.session_id, NOW)
    assert read_auth_epoch(archive.engine) == (before or 0) + 1
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(cookie, NOW)
