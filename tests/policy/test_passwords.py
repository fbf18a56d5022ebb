"""Password sign-in: argon2id, one refusal for every failure, lockout on a controllable clock."""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest

from archive.store import Archive
from ferry.settings import Settings
from foundation.errors import AuthenticationFailed
from policy.models import UserStatus
from policy.passwords import (
    SIGN_IN_REFUSED,
    authenticate_password,
    hash_password,
    verify_password,
)
from tests.conftest import production_passwords
from tests.policy._people import PASSWORD, add_user, change_user, get_user

# What these tests prove (the hashes' parameters, the rehash, the cost of each refusal) is
# about the production parameters, not the cheaper ones the other tests hash with.
pytestmark = production_passwords

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_hashes_are_salted_argon2id() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$v=19$")
    assert first != second
    assert verify_password(first, PASSWORD)
    assert not verify_password(first, PASSWORD + "!")


@pytest.mark.parametrize("stored", ["", "plain text", "$argon2id$v=19$m=1$broken", "$2b$12$bcrypt"])
def test_a_missing_or_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password(stored, PASSWORD)


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_password_length_is_bounded(password: str) -> None:
    with pytest.raises(ValueError, match="characters"):
        hash_password(password)
    assert not verify_password(hash_password(PASSWORD), password)


def _sign_in(archive: Archive, settings: Settings, email: str, password: str, now: datetime):
    return authenticate_password(archive.engine, settings.auth(), email, password, now)


def test_right_password_signs_in(archive: Archive, settings: Settings) -> None:
    pk = add_user(archive.engine, "ada@example.org")
    assert _sign_in(archive, settings, "ada@example.org", PASSWORD, NOW).pk == pk
    assert _sign_in(archive, settings, "  Ada@Example.ORG ", PASSWORD, NOW).pk == pk


@pytest.mark.parametrize(
    ("email", "password", "status"),
    [
        ("ada@example.org", "wrong password here", UserStatus.ACTIVE),
        ("nobody@example.org", PASSWORD, UserStatus.ACTIVE),
        ("ada@example.org", PASSWORD, UserStatus.PENDING),
        ("ada@example.org", PASSWORD, UserStatus.DISABLED),
        ("ada@example.org", "", UserStatus.ACTIVE),
    ],
    ids=["wrong password", "unknown email", "pending", "disabled", "empty password"],
)
def test_every_refusal_reads_the_same(
    archive: Archive, settings: Settings, email: str, password: str, status: UserStatus
) -> None:
    add_user(archive.engine, "ada@example.org", status=status)
    with pytest.raises(AuthenticationFailed) as refused:
        _sign_in(archive, settings, email, password, NOW)
    assert str(refused.value) == SIGN_IN_REFUSED


def test_a_user_without_password_cannot_sign_in_with_one(
    archive: Archive, settings: Settings
) -> None:
    add_user(archive.engine, "oidc-only@example.org", password=None)
    with pytest.raises(AuthenticationFailed):
        _sign_in(archive, settings, "oidc-only@example.org", "", NOW)
    with pytest.raises(AuthenticationFailed):
        _sign_in(archive, settings, "oidc-only@example.org", PASSWORD, NOW)


def test_lockout_after_failures_and_unlock_after_the_lockout_time(
    archive: Archive, settings: Settings
) -> None:
    settings = dataclasses.replace(settings, login_max_failures=3, login_lockout_seconds=600)
    pk = add_user(archive.engine, "ada@example.org")
    for attempt in range(3):
        with pytest.raises(AuthenticationFailed):
            _sign_in(archive, settings, "ada@example.org", f"guess number {attempt}", NOW)
    locked = get_user(archive.engine, pk)
    assert locked.locked_until == NOW + timedelta(seconds=600)
    # locked: even the right password is refused, in the same words
    with pytest.raises(AuthenticationFailed, match=SIGN_IN_REFUSED):
        _sign_in(archive, settings, "ada@example.org", PASSWORD, NOW + timedelta(seconds=599))
    # attempts during the lock do not extend it
    with pytest.raises(AuthenticationFailed):
        _sign_in(
            archive, settings, "ada@example.org", "another guess!!", NOW + timedelta(minutes=5)
        )
    assert get_user(archive.engine, pk).locked_until == locked.locked_until
    signed_in = _sign_in(
        archive, settings, "ada@example.org", PASSWORD, NOW + timedelta(minutes=11)
    )
    assert signed_in.failed_logins == 0 and signed_in.locked_until is None


def test_a_success_resets_the_failure_count(archive: Archive, settings: Settings) -> None:
    settings = dataclasses.replace(settings, login_max_failures=3)
    pk = add_user(archive.engine, "ada@example.org")
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            _sign_in(archive, settings, "ada@example.org", "not the password", NOW)
    assert get_user(archive.engine, pk).failed_logins == 2
    _sign_in(archive, settings, "ada@example.org", PASSWORD, NOW)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            _sign_in(archive, settings, "ada@example.org", "not the password", NOW)
    assert get_user(archive.engine, pk).locked_until is None


def test_outdated_hash_parameters_are_upgraded_on_sign_in(
    archive: Archive, settings: Settings
) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    pk = add_user(archive.engine, "ada@example.org")
    change_user(archive.engine, pk, password_hash=weak)
    _sign_in(archive, settings, "ada@example.org", PASSWORD, NOW)
    upgraded = get_user(archive.engine, pk).password_hash
    assert upgraded != weak and "m=65536" in upgraded
    assert verify_password(upgraded, PASSWORD)


def test_unknown_email_costs_about_as_much_as_a_wrong_password(
    archive: Archive, settings: Settings
) -> None:
    """No early return for unknown accounts: both paths run one argon2id verification."""
    settings = dataclasses.replace(settings, login_max_failures=100)
    add_user(archive.engine, "ada@example.org")

    def timed(email: str) -> float:
        start = time.perf_counter()
        with pytest.raises(AuthenticationFailed):
            _sign_in(archive, settings, email, "wrong password again", NOW)
        return time.perf_counter() - start

    timed("nobody@example.org")  # the decoy hash is computed once, lazily
    unknown = statistics.median(timed("nobody@example.org") for _ in range(5))
    known = statistics.median(timed("ada@example.org") for _ in range(5))
    assert unknown > 0.4 * known
