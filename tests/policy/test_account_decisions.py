"""Accounts and access into institutions, as tables: who may change a person, who may let in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.decision import (
    AccountFacts,
    Context,
    InstitutionFacts,
    PolicySnapshot,
    Resource,
    decide,
)
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role, Scope

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
A, B, A_CARDIO = 1, 2, 3  # institutions; A_CARDIO is a security institution of A
ADMIN = {Role.INSTITUTION_ADMIN}
SNAPSHOT = PolicySnapshot(
    institutions={
        A: InstitutionFacts(A, "A"),
        B: InstitutionFacts(B, "B"),
        A_CARDIO: InstitutionFacts(A_CARDIO, "A-CARDIO", parent_pk=A),
    }
)


def user(memberships: dict[int, set[Role]], **kwargs: object) -> Principal:
    roles = {pk: frozenset(r) for pk, r in memberships.items()}
    return Principal(PrincipalKind.USER, 7, "u@example.org", roles, **kwargs)  # type: ignore[arg-type]


def account(*institutions: int, system_admin: bool = False) -> AccountFacts:
    return AccountFacts(99, system_admin, frozenset(institutions))


SYSTEM = user({}, system_admin=True)
A_ADMIN = user({A: ADMIN})
A_AND_B_ADMIN = user({A: ADMIN, B: ADMIN})
CARDIO_ADMIN = user({A_CARDIO: ADMIN})
A_VIEWER = user({A: {Role.VIEWER}})
A_REQUESTER = user({A: {Role.REQUESTER}})
ADMIN_CLIENT_READ_TOKEN = Principal(
    PrincipalKind.API_CLIENT, 3, "tool", {A: frozenset(ADMIN)}, scopes=frozenset({Scope.READ})
)

# Changing the account itself: password, email, status, flags.
ACCOUNT_CASES = [
    # principal, target account, allowed, rule
    (SYSTEM, account(A), True, "system-admin"),
    (SYSTEM, account(system_admin=True), True, "system-admin"),
    (A_ADMIN, account(A), True, "administrator-of-every-institution"),
    (A_ADMIN, account(A, system_admin=True), False, "system-account"),  # the takeover
    (A_ADMIN, account(system_admin=True), False, "system-account"),
    (A_ADMIN, account(A, B), False, "account-beyond-your-institutions"),
    (A_AND_B_ADMIN, account(A, B), True, "administrator-of-every-institution"),
    (A_ADMIN, account(B), False, "account-beyond-your-institutions"),
    (A_ADMIN, account(), False, "account-beyond-your-institutions"),  # nobody's member
    (A_ADMIN, account(A_CARDIO), False, "account-beyond-your-institutions"),  # parent only
    (A_ADMIN, account(A, A_CARDIO), False, "account-beyond-your-institutions"),
    (CARDIO_ADMIN, account(A_CARDIO), True, "administrator-of-every-institution"),
    (A_VIEWER, account(A), False, "account-beyond-your-institutions"),
    (A_REQUESTER, account(A), False, "account-beyond-your-institutions"),
    (ADMIN_CLIENT_READ_TOKEN, account(A), False, "account-beyond-your-institutions"),
    (user({A: ADMIN}, active=False), account(A), False, "principal-inactive"),
]


@pytest.mark.parametrize(("principal", "target", "allowed", "rule"), ACCOUNT_CASES)
def test_account_decisions(principal, target, allowed, rule) -> None:
    decision = decide(
        principal, Action.ADMINISTER, Resource.account_of(target), Context(NOW), SNAPSHOT
    )
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert decision.reason and decision.chain[-1] == rule


# A membership of the account in an institution: add directly, change roles, remove.
MEMBERSHIP_CASES = [
    # principal, target account, institution, allowed, rule
    (SYSTEM, account(B), A, True, "system-admin"),
    (SYSTEM, account(system_admin=True), A, True, "system-admin"),
    (A_ADMIN, account(A), A, True, "membership-role"),  # already a member: roles in A are A's
    (A_ADMIN, account(A, B), A, True, "membership-role"),
    (A_ADMIN, account(B), A, False, "invitation-required"),  # another institution's person
    (A_ADMIN, account(), A, False, "invitation-required"),
    (A_ADMIN, account(system_admin=True), A, False, "system-account"),  # the takeover, step 1
    (A_ADMIN, account(A, system_admin=True), A, False, "system-account"),
    (A_ADMIN, account(A), B, False, "default-deny"),
    (A_ADMIN, account(A), A_CARDIO, False, "security-institution-access"),  # item 5
    (A_ADMIN, account(A_CARDIO), A_CARDIO, False, "security-institution-access"),
    (CARDIO_ADMIN, account(A_CARDIO), A_CARDIO, True, "membership-role"),
    (CARDIO_ADMIN, account(A), A_CARDIO, False, "invitation-required"),
    (A_VIEWER, account(A), A, False, "default-deny"),
    (A_REQUESTER, account(A), A, False, "default-deny"),
    (ADMIN_CLIENT_READ_TOKEN, account(A), A, False, "default-deny"),
]


@pytest.mark.parametrize(
    ("principal", "target", "institution", "allowed", "rule"), MEMBERSHIP_CASES
)
def test_membership_decisions(principal, target, institution, allowed, rule) -> None:
    resource = Resource.account_of(target, institution)
    decision = decide(principal, Action.ADMINISTER, resource, Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert decision.reason and decision.chain[-1] == rule


# A new way into an institution's studies: API client, querying node, grant of its study.
ACCESS_CASES = [
    (SYSTEM, A_CARDIO, True, "system-admin"),
    (A_ADMIN, A, True, "membership-role"),
    (A_ADMIN, A_CARDIO, False, "security-institution-access"),
    (A_ADMIN, B, False, "default-deny"),
    (CARDIO_ADMIN, A_CARDIO, True, "membership-role"),
    (CARDIO_ADMIN, A, False, "default-deny"),
    (A_VIEWER, A, False, "default-deny"),
    (A_REQUESTER, A, False, "default-deny"),
    (ADMIN_CLIENT_READ_TOKEN, A, False, "default-deny"),
    (user({A: ADMIN}, system_admin=True, scopes=frozenset({Scope.READ})), A, False, "default-deny"),
]


@pytest.mark.parametrize(("principal", "institution", "allowed", "rule"), ACCESS_CASES)
def test_access_decisions(principal, institution, allowed, rule) -> None:
    resource = Resource.access_to(institution)
    decision = decide(principal, Action.ADMINISTER, resource, Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (allowed, rule)


def test_accounts_know_only_administration() -> None:
    decision = decide(
        SYSTEM, Action.SEARCH, Resource.account_of(account(A)), Context(NOW), SNAPSHOT
    )
    assert (decision.allowed, decision.rule) == (False, "action-not-for-accounts")


institutions = st.sampled_from([A, B, A_CARDIO])
role_sets = st.frozensets(st.sampled_from(list(Role)), max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    memberships=st.dictionaries(institutions, role_sets, max_size=3),
    theirs=st.frozensets(institutions, max_size=3),
    target_system=st.booleans(),
)
def test_nobody_but_a_system_administrator_changes_one(memberships, theirs, target_system):
    """And nobody else changes an account beyond the institutions they administer as members."""
    principal = Principal(PrincipalKind.USER, 1, "p", memberships)
    facts = AccountFacts(2, target_system, theirs)
    decision = decide(
        principal, Action.ADMINISTER, Resource.account_of(facts), Context(NOW), SNAPSHOT
    )
    administered = {pk for pk, roles in memberships.items() if Role.INSTITUTION_ADMIN in roles}
    expected = not target_system and bool(theirs) and theirs <= administered
    assert decision.allowed is expected
