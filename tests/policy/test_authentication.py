"""Credentials -> Principal: live revocation, API tokens, sessions with CSRF, refresh rotation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from archive.store import Archive
from ferry.settings import Settings
from foundation.errors import AuthenticationFailed
from policy.authentication import Authenticator, Credentials
from policy.models import ApiClient, ApiToken, Membership, UserStatus
from policy.principal import ANONYMOUS, PrincipalKind
from policy.refresh_tokens import (
    issue_refresh_token,
    revoke_refresh_token,
    rotate_refresh_token,
)
from policy.roles import Role, Scope
from tests.policy._people import (
    add_api_token,
    add_institution,
    add_user,
    change_user,
    get_user,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def authenticator(settings: Settings, archive: Archive) -> Iterator[Authenticator]:
    yield Authenticator.open(settings.auth(), archive.engine)


@pytest.fixture
def radb(archive: Archive) -> int:
    return add_institution(archive.engine, "RADB")


def _bearer(token: str, method: str = "GET") -> Credentials:
    return Credentials(method, authorization=f"Bearer {token}")


def test_no_credentials_is_anonymous(authenticator: Authenticator) -> None:
    assert authenticator.authenticate(Credentials("GET"), NOW) is ANONYMOUS


def test_access_token_gives_the_user_with_memberships_from_the_database(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    card = add_institution(archive.engine, "CARD")
    pk = add_user(archive.engine, "ada@example.org", memberships={radb: "viewer,receiver"})
    token = authenticator.issue_access_token(get_user(archive.engine, pk), NOW)
    principal = authenticator.authenticate(_bearer(token), NOW)
    assert (principal.kind, principal.id, principal.name) == (
        PrincipalKind.USER,
        pk,
        "ada@example.org",
    )
    assert principal.memberships == {radb: frozenset({Role.VIEWER, Role.RECEIVER})}
    assert principal.scopes is None and not principal.system_admin
    # a membership added after the token was issued counts at once: rows are read per request
    with Session(archive.engine) as session:
        session.add(Membership(user_pk=pk, institution_pk=card, roles="sender"))
        session.commit()
    assert authenticator.authenticate(_bearer(token), NOW).memberships[card] == {Role.SENDER}


def test_access_token_names_institutions_and_roles_as_claims(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    from jose import jwt

    pk = add_user(archive.engine, "ada@example.org", memberships={radb: "viewer,receiver"})
    token = authenticator.issue_access_token(get_user(archive.engine, pk), NOW)
    claims = jwt.get_unverified_claims(token)
    assert claims["sub"] == str(pk) and claims["ver"] == 0
    assert claims["inst"] == ["RADB"]
    assert claims["roles"] == {"RADB": ["receiver", "viewer"]}


@pytest.mark.parametrize(
    "change",
    [
        {"status": UserStatus.DISABLED},
        {"status": UserStatus.PENDING},
        {"token_version": 1},
    ],
    ids=["disabled", "back to pending", "token version bumped"],
)
def test_a_live_token_stops_at_once(
    authenticator: Authenticator, archive: Archive, change: dict[str, object]
) -> None:
    pk = add_user(archive.engine, "ada@example.org")
    user = get_user(archive.engine, pk)
    access = authenticator.issue_access_token(user, NOW)
    session = authenticator.issue_session(user, NOW)
    authenticator.authenticate(_bearer(access), NOW)
    change_user(archive.engine, pk, **change)
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(_bearer(access), NOW)
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(Credentials("GET", session=session.session_token), NOW)


def test_a_deleted_users_token_is_refused(authenticator: Authenticator, archive: Archive) -> None:
    other = add_user(archive.engine, "bob@example.org")
    user = get_user(archive.engine, other)
    user.pk = 999_999
    token = authenticator.issue_access_token(user, NOW, sid="of-a-deleted-user")
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(_bearer(token), NOW)


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWRhOnNlY3JldA==", "Bearer", "Bearer ", "Token abc", "bearer not-a-jwt", ""],
)
def test_malformed_authorization_is_refused(
    authenticator: Authenticator, authorization: str
) -> None:
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(Credentials("GET", authorization=authorization), NOW)


def test_a_token_from_an_unknown_issuer_is_refused(
    authenticator: Authenticator, settings: Settings, archive: Archive
) -> None:
    import dataclasses

    pk = add_user(archive.engine, "ada@example.org")
    other = Authenticator.open(
        dataclasses.replace(settings, token_issuer="other").auth(), archive.engine
    )
    token = other.issue_access_token(get_user(archive.engine, pk), NOW)
    with pytest.raises(AuthenticationFailed, match="issuer is not trusted"):
        authenticator.authenticate(_bearer(token), NOW)


# API tokens


def test_api_token_gives_the_client_with_its_institution_roles_and_scopes(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    token, client_pk, _ = add_api_token(
        archive.engine, radb, roles="receiver,sender", scopes="read,download"
    )
    principal = authenticator.authenticate(_bearer(token), NOW)
    assert (principal.kind, principal.id, principal.name) == (
        PrincipalKind.API_CLIENT,
        client_pk,
        "ai-tool",
    )
    assert principal.memberships == {radb: frozenset({Role.RECEIVER, Role.SENDER})}
    assert principal.scopes == {Scope.READ, Scope.DOWNLOAD}


def _last_used(archive: Archive, token_pk: int) -> datetime | None:
    with Session(archive.engine) as session:
        row = session.get(ApiToken, token_pk)
        assert row is not None
        return row.last_used_at


def test_last_used_is_written_at_most_once_a_minute(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    token, _, token_pk = add_api_token(archive.engine, radb)
    assert _last_used(archive, token_pk) is None
    authenticator.authenticate(_bearer(token), NOW)
    assert _last_used(archive, token_pk) == NOW
    authenticator.authenticate(_bearer(token), NOW + timedelta(seconds=59))
    assert _last_used(archive, token_pk) == NOW
    authenticator.authenticate(_bearer(token), NOW + timedelta(seconds=61))
    assert _last_used(archive, token_pk) == NOW + timedelta(seconds=61)


def _revoke_token(archive: Archive, token_pk: int) -> None:
    with Session(archive.engine) as session:
        row = session.get(ApiToken, token_pk)
        assert row is not None
        row.revoked_at = NOW
        session.add(row)
        session.commit()


def _disable_client(archive: Archive, client_pk: int) -> None:
    with Session(archive.engine) as session:
        row = session.get(ApiClient, client_pk)
        assert row is not None
        row.disabled = True
        session.add(row)
        session.commit()


def test_revoked_api_token_stops_at_once(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    token, _, token_pk = add_api_token(archive.engine, radb)
    authenticator.authenticate(_bearer(token), NOW)
    _revoke_token(archive, token_pk)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        authenticator.authenticate(_bearer(token), NOW)


def test_disabled_client_stops_at_once(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    token, client_pk, _ = add_api_token(archive.engine, radb)
    authenticator.authenticate(_bearer(token), NOW)
    _disable_client(archive, client_pk)
    with pytest.raises(AuthenticationFailed, match="disabled"):
        authenticator.authenticate(_bearer(token), NOW)


def test_expired_api_token_is_refused(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    token, _, _ = add_api_token(archive.engine, radb, expires_at=NOW + HOUR)
    authenticator.authenticate(_bearer(token), NOW + HOUR - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        authenticator.authenticate(_bearer(token), NOW + HOUR)


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda token: "ferry_0000000000000000_" + token.rsplit("_", 1)[-1],
        lambda token: "ferry_" + token.split("_")[1],
        lambda token: "ferry_",
        lambda token: "ferry_" + "a" * 300,
    ],
    ids=["wrong secret", "unknown id", "no secret", "prefix only", "too long"],
)
def test_forged_api_tokens_are_refused(
    authenticator: Authenticator, archive: Archive, radb: int, forge
) -> None:
    token, _, _ = add_api_token(archive.engine, radb)
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(_bearer(forge(token)), NOW)


# Sessions and CSRF


def test_session_reads_need_no_csrf_but_writes_do(
    authenticator: Authenticator, archive: Archive, radb: int
) -> None:
    pk = add_user(archive.engine, "ada@example.org", memberships={radb: "viewer"})
    grant = authenticator.issue_session(get_user(archive.engine, pk), NOW)
    cookie = grant.session_token
    assert authenticator.authenticate(Credentials("GET", session=cookie), NOW).id == pk
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(AuthenticationFailed, match="x-csrf-token"):
            authenticator.authenticate(Credentials(method, session=cookie), NOW)
        with pytest.raises(AuthenticationFailed, match="x-csrf-token"):
            authenticator.authenticate(Credentials(method, session=cookie, csrf="guess"), NOW)
        credentials = Credentials(method, session=cookie, csrf=grant.csrf_token)
        assert authenticator.authenticate(credentials, NOW).id == pk


def test_csrf_token_of_another_session_does_not_fit(
    authenticator: Authenticator, archive: Archive
) -> None:
    pk = add_user(archive.engine, "ada@example.org")
    mine = authenticator.issue_session(get_user(archive.engine, pk), NOW)
    theirs = authenticator.issue_session(get_user(archive.engine, pk), NOW)
    with pytest.raises(AuthenticationFailed):
        credentials = Credentials("POST", session=mine.session_token, csrf=theirs.csrf_token)
        authenticator.authenticate(credentials, NOW)


def test_session_and_access_tokens_are_not_interchangeable(
    authenticator: Authenticator, archive: Archive
) -> None:
    user = get_user(archive.engine, add_user(archive.engine, "ada@example.org"))
    session = authenticator.issue_session(user, NOW)
    access = authenticator.issue_access_token(user, NOW)
    with pytest.raises(AuthenticationFailed, match="not an access token"):
        authenticator.authenticate(_bearer(session.session_token), NOW)
    with pytest.raises(AuthenticationFailed, match="not a session token"):
        authenticator.authenticate(Credentials("GET", session=access), NOW)


def test_session_expires(
    authenticator: Authenticator, archive: Archive, settings: Settings
) -> None:
    user = get_user(archive.engine, add_user(archive.engine, "ada@example.org"))
    cookie = authenticator.issue_session(user, NOW).session_token
    later = NOW + timedelta(seconds=settings.refresh_token_seconds) + timedelta(minutes=1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        authenticator.authenticate(Credentials("GET", session=cookie), later)


# Refresh tokens


def test_refresh_rotates_and_reuse_revokes_the_family(archive: Archive) -> None:
    user = get_user(archive.engine, add_user(archive.engine, "ada@example.org"))
    first = issue_refresh_token(archive.engine, user, HOUR, NOW)
    same_user, second, _ = rotate_refresh_token(archive.engine, first, HOUR, NOW)
    assert same_user.pk == user.pk and second != first
    with pytest.raises(AuthenticationFailed):  # a spent token, replayed: theft
        rotate_refresh_token(archive.engine, first, HOUR, NOW)
    with pytest.raises(AuthenticationFailed):  # so the live successor dies with it
        rotate_refresh_token(archive.engine, second, HOUR, NOW)


def test_other_sign_ins_survive_a_reuse(archive: Archive) -> None:
    user = get_user(archive.engine, add_user(archive.engine, "ada@example.org"))
    laptop = issue_refresh_token(archive.engine, user, HOUR, NOW)
    phone = issue_refresh_token(archive.engine, user, HOUR, NOW)
    rotate_refresh_token(archive.engine, laptop, HOUR, NOW)
    with pytest.raises(AuthenticationFailed):
        rotate_refresh_token(archive.engine, laptop, HOUR, NOW)
    rotate_refresh_token(archive.engine, phone, HOUR, NOW)


@pytest.mark.parametrize(
    "change",
    [{"status": UserStatus.DISABLED}, {"token_version": 5}],
    ids=["disabled", "token version bumped"],
)
def test_refresh_stops_with_the_user(archive: Archive, change: dict[str, object]) -> None:
    pk = add_user(archive.engine, "ada@example.org")
    token = issue_refresh_token(archive.engine, get_user(archive.engine, pk), HOUR, NOW)
    change_user(archive.engine, pk, **change)
    with pytest.raises(AuthenticationFailed):
        rotate_refresh_token(archive.engine, token, HOUR, NOW)


def test_refresh_token_expires_and_can_be_revoked(archive: Archive) -> None:
    user = get_user(archive.engine, add_user(archive.engine, "ada@example.org"))
    token = issue_refresh_token(archive.engine, user, HOUR, NOW)
    with pytest.raises(AuthenticationFailed):
        rotate_refresh_token(archive.engine, token, HOUR, NOW + HOUR)
    other = issue_refresh_token(archive.engine, user, HOUR, NOW)
    assert revoke_refresh_token(archive.engine, other, NOW)
    with pytest.raises(AuthenticationFailed):
        rotate_refresh_token(archive.engine, other, HOUR, NOW)
    assert not revoke_refresh_token(archive.engine, "ferry_rt_nothing_here", NOW)


@pytest.mark.parametrize(
    "presented", ["", "garbage", "ferry_rt_", "ferry_rt_abc", "ferry_rt_abc_def", "x" * 10_000]
)
def test_malformed_refresh_tokens_are_refused(archive: Archive, presented: str) -> None:
    with pytest.raises(AuthenticationFailed):
        rotate_refresh_token(archive.engine, presented, HOUR, NOW)
