"""Administrators' work on transfers and jobs, as tables: who may mark a failed delivery
delivered ("deliver as sent"), who may see and retry a parked job, who opens an institution's
pages without belonging to it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policy.decision import Context, Resource, decide
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role, Scope

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
SENDER, RECEIVER, OTHER = 1, 2, 3
ADMIN = {Role.INSTITUTION_ADMIN}


def user(memberships: dict[int, set[Role]], **kwargs: object) -> Principal:
    roles = {pk: frozenset(r) for pk, r in memberships.items()}
    return Principal(PrincipalKind.USER, 7, "u@example.org", roles, **kwargs)  # type: ignore[arg-type]


SENDER_ADMIN = user({SENDER: ADMIN})
RECEIVER_ADMIN = user({RECEIVER: ADMIN})
OTHER_ADMIN = user({OTHER: ADMIN})
PLAIN_SENDER = user({SENDER: {Role.SENDER, Role.RECEIVER, Role.VIEWER}})
RECEIVER_MEMBER = user({RECEIVER: {Role.RECEIVER, Role.VIEWER, Role.SENDER}})
REQUESTER = user({SENDER: {Role.REQUESTER}})
SYSTEM = user({}, system_admin=True)
SYSTEM_AND_SENDER_ADMIN = user({SENDER: ADMIN}, system_admin=True)
READ_TOKEN = Principal(
    PrincipalKind.API_CLIENT, 3, "tool", {SENDER: frozenset(ADMIN)}, scopes=frozenset({Scope.READ})
)
VIEWER_LINK = user({SENDER: ADMIN}, studies=frozenset({"1.2.3"}))

MARK_DELIVERED_CASES = [
    # principal, allowed, rule
    (SENDER_ADMIN, True, "sender-administrator"),
    (SYSTEM_AND_SENDER_ADMIN, True, "sender-administrator"),
    (RECEIVER_ADMIN, False, "sender-administrator"),  # the sender's delivery, not theirs
    (RECEIVER_MEMBER, False, "sender-administrator"),
    (PLAIN_SENDER, False, "sender-administrator"),  # sends, but does not attest
    (REQUESTER, False, "sender-administrator"),
    (OTHER_ADMIN, False, "sender-administrator"),
    (SYSTEM, False, "sender-administrator"),  # runs the service; no word on patients' images
    (READ_TOKEN, False, "sender-administrator"),
    (VIEWER_LINK, False, "study-limited"),
    (user({SENDER: ADMIN}, active=False), False, "principal-inactive"),
]


@pytest.mark.parametrize(("principal", "allowed", "rule"), MARK_DELIVERED_CASES)
def test_who_may_mark_a_transfer_delivered(principal: Principal, allowed: bool, rule: str) -> None:
    resource = Resource.transfer(SENDER, RECEIVER)
    decision = decide(principal, Action.ADMINISTER, resource, Context(NOW))
    assert (decision.allowed, decision.rule) == (allowed, rule)
    if allowed:
        assert "side:sender" in decision.obligations


BOTH = frozenset({SENDER, RECEIVER})
JOB_CASES = [
    # principal, the job's institutions, allowed, rule
    (SYSTEM, frozenset(), True, "system-admin"),  # Ferry's own jobs: the system's
    (SYSTEM, BOTH, True, "system-admin"),
    (SENDER_ADMIN, BOTH, True, "job-institution-administrator"),
    (RECEIVER_ADMIN, BOTH, True, "job-institution-administrator"),
    (SENDER_ADMIN, frozenset({SENDER}), True, "job-institution-administrator"),
    (RECEIVER_ADMIN, frozenset({SENDER}), False, "default-deny"),  # a draft's fetch
    (SENDER_ADMIN, frozenset(), False, "default-deny"),
    (OTHER_ADMIN, BOTH, False, "default-deny"),
    (PLAIN_SENDER, BOTH, False, "default-deny"),
    (RECEIVER_MEMBER, BOTH, False, "default-deny"),
    (REQUESTER, BOTH, False, "default-deny"),
    (READ_TOKEN, BOTH, False, "default-deny"),
    (VIEWER_LINK, BOTH, False, "default-deny"),
]


@pytest.mark.parametrize(("principal", "owners", "allowed", "rule"), JOB_CASES)
def test_who_may_see_and_retry_a_job(
    principal: Principal, owners: frozenset[int], allowed: bool, rule: str
) -> None:
    decision = decide(principal, Action.ADMINISTER, Resource.job(owners), Context(NOW))
    assert (decision.allowed, decision.rule) == (allowed, rule)


def test_a_job_is_only_administered() -> None:
    decision = decide(SYSTEM, Action.SEARCH, Resource.job(BOTH), Context(NOW))
    assert (decision.allowed, decision.rule) == (False, "action-not-for-jobs")


OPEN_CASES = [
    # principal, action on an institution they do not belong to, allowed
    (SYSTEM, Action.ADMINISTER, True),
    (SYSTEM, Action.AUDIT, True),
    (SYSTEM, Action.SEARCH, False),  # patient data needs a membership, as for anyone
    (OTHER_ADMIN, Action.ADMINISTER, False),
    (OTHER_ADMIN, Action.AUDIT, False),
]


@pytest.mark.parametrize(("principal", "action", "allowed"), OPEN_CASES)
def test_who_opens_an_institution_without_belonging(
    principal: Principal, action: Action, allowed: bool
) -> None:
    decision = decide(principal, action, Resource.institution(SENDER), Context(NOW))
    assert decision.allowed is allowed
