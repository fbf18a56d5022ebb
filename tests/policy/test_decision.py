"""The decision engine as tables, one line a case, and properties over random worlds."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.decision import (
    Context,
    GrantFacts,
    InstitutionFacts,
    NodeFacts,
    PolicySnapshot,
    Resource,
    RuleFacts,
    decide,
)
from policy.hours import CoreHoursFacts, in_core_hours
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role, Scope

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday, 10:00 UTC
A, B, A_CARDIO = 1, 2, 3  # institutions; A_CARDIO is a security institution of A


def user(memberships: dict[int, set[Role]], **kwargs: object) -> Principal:
    roles = {pk: frozenset(r) for pk, r in memberships.items()}
    return Principal(PrincipalKind.USER, 7, "u@example.org", roles, **kwargs)  # type: ignore[arg-type]


def study(owner: int | None, *grants: GrantFacts) -> Resource:
    return Resource.study("1.2.3", owner, tuple(grants))


SNAPSHOT = PolicySnapshot(
    institutions={
        A: InstitutionFacts(A, "A"),
        B: InstitutionFacts(B, "B", hours=CoreHoursFacts(timezone="Europe/London")),
        A_CARDIO: InstitutionFacts(A_CARDIO, "A-CARDIO", parent_pk=A),
    }
)
EXPIRED = GrantFacts(B, expires_at=NOW - timedelta(days=1))
REVOKED = GrantFacts(B, revoked_at=NOW - timedelta(hours=1))
ACTIVE = GrantFacts(B, expires_at=NOW + timedelta(days=1))
REVOKED_LATER = GrantFacts(B, revoked_at=NOW + timedelta(hours=1))  # scheduled: live until then
VIEW_ONLY = GrantFacts(B, actions=frozenset({"search", "read-metadata", "read-pixels"}))
FORGED = GrantFacts(B, actions=frozenset({"search", "delete", "store"}))  # no grant gives these
ADMIN_B = {B: {Role.INSTITUTION_ADMIN, Role.SENDER, Role.RECEIVER}}

STUDY_CASES = [
    # principal memberships, action, resource, allowed, rule
    ({A: {Role.VIEWER}}, Action.SEARCH, study(A), True, "owner-membership"),
    ({A: {Role.VIEWER}}, Action.READ_PIXELS, study(A), True, "owner-membership"),
    ({A: {Role.VIEWER}}, Action.DOWNLOAD, study(A), False, "default-deny"),
    ({A: {Role.RECEIVER}}, Action.DOWNLOAD, study(A), True, "owner-membership"),
    ({A: {Role.SENDER}}, Action.DELETE, study(A), False, "default-deny"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.DELETE, study(A), True, "owner-membership"),
    ({A: {Role.REQUESTER}}, Action.SEARCH, study(A), False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.READ_METADATA, study(A), False, "default-deny"),
    ({A: {Role.VIEWER}}, Action.SEARCH, study(B), False, "default-deny"),
    ({B: {Role.VIEWER}}, Action.SEARCH, study(A, ACTIVE), True, "active-grant"),
    ({B: {Role.VIEWER}}, Action.SEARCH, study(A, EXPIRED), False, "default-deny"),
    ({B: {Role.VIEWER}}, Action.SEARCH, study(A, REVOKED), False, "default-deny"),
    ({B: {Role.RECEIVER}}, Action.DOWNLOAD, study(A, ACTIVE), True, "active-grant"),
    ({B: {Role.VIEWER}}, Action.DELETE, study(A, ACTIVE), False, "default-deny"),
    # A grant shares reading (and downloading); deleting stays with the owner.
    (ADMIN_B, Action.DELETE, study(A, ACTIVE), False, "grant-excludes-action"),
    (ADMIN_B, Action.DELETE, study(A, FORGED), False, "grant-excludes-action"),
    (ADMIN_B, Action.STORE, study(A, ACTIVE), False, "action-not-for-studies"),
    (ADMIN_B, Action.READ_METADATA, study(A, ACTIVE), True, "active-grant"),
    (ADMIN_B, Action.DOWNLOAD, study(A, ACTIVE), True, "active-grant"),
    (ADMIN_B, Action.DELETE, study(A, EXPIRED), False, "default-deny"),
    ({B: {Role.RECEIVER}}, Action.DOWNLOAD, study(A, VIEW_ONLY), False, "grant-excludes-action"),
    ({B: {Role.VIEWER}}, Action.READ_PIXELS, study(A, VIEW_ONLY), True, "active-grant"),
    ({B: {Role.VIEWER}}, Action.SEARCH, study(A, FORGED), True, "active-grant"),
    ({B: {Role.VIEWER}}, Action.SEARCH, study(A, REVOKED_LATER), True, "active-grant"),
    # Retention holds: an administrator of the owner, or of a live grant's holder, keeps it.
    ({A: {Role.INSTITUTION_ADMIN}}, Action.HOLD, study(A), True, "owner-membership"),
    (ADMIN_B, Action.HOLD, study(A, ACTIVE), True, "grant-holder-hold"),
    (ADMIN_B, Action.HOLD, study(A, VIEW_ONLY), True, "grant-holder-hold"),
    (ADMIN_B, Action.HOLD, study(A, EXPIRED), False, "default-deny"),
    (ADMIN_B, Action.HOLD, study(A, REVOKED), False, "default-deny"),
    (ADMIN_B, Action.HOLD, study(A), False, "default-deny"),
    ({B: {Role.RECEIVER}}, Action.HOLD, study(A, ACTIVE), False, "default-deny"),
    ({A: {Role.SENDER, Role.RECEIVER, Role.VIEWER}}, Action.HOLD, study(A), False, "default-deny"),
    ({A: {Role.REQUESTER}}, Action.HOLD, study(A), False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.HOLD, study(A), False, "default-deny"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.DELETE, study(A, ACTIVE), True, "owner-membership"),
    ({A: {Role.VIEWER}}, Action.SEARCH, study(A_CARDIO), False, "default-deny"),
    ({A_CARDIO: {Role.VIEWER}}, Action.SEARCH, study(A_CARDIO), True, "owner-membership"),
    ({A_CARDIO: {Role.VIEWER}}, Action.SEARCH, study(A), False, "default-deny"),
    ({A: {Role.VIEWER}, B: {Role.VIEWER}}, Action.SEARCH, study(B), True, "owner-membership"),
    ({}, Action.SEARCH, study(A), False, "default-deny"),
    ({A: {Role.VIEWER}}, Action.SEARCH, study(None), False, "default-deny"),
    ({A: {Role.VIEWER}}, Action.STORE, study(A), False, "action-not-for-studies"),
]


@pytest.mark.parametrize(("memberships", "action", "resource", "allowed", "rule"), STUDY_CASES)
def test_study_decisions(memberships, action, resource, allowed, rule) -> None:
    decision = decide(user(memberships), action, resource, Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert decision.reason
    assert decision.chain[-1] == rule
    if allowed:
        assert "audit" in decision.obligations


def test_a_disabled_principal_is_refused_whatever_its_roles() -> None:
    principal = user({A: set(Role)}, active=False)
    decision = decide(principal, Action.SEARCH, study(A), Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (False, "principal-inactive")


def test_a_system_administrator_sees_no_patient_data_without_a_membership() -> None:
    admin = user({}, system_admin=True)
    assert not decide(admin, Action.SEARCH, study(A), Context(NOW), SNAPSHOT).allowed
    administer = decide(admin, Action.ADMINISTER, Resource.institution(B), Context(NOW), SNAPSHOT)
    assert (administer.allowed, administer.rule) == (True, "system-admin")


@pytest.mark.parametrize(
    ("scopes", "action", "allowed"),
    [
        ({Scope.READ}, Action.SEARCH, True),
        ({Scope.READ}, Action.DOWNLOAD, False),
        ({Scope.DOWNLOAD}, Action.DOWNLOAD, True),
        ({Scope.WRITE}, Action.SEARCH, False),
        (set(), Action.SEARCH, False),
    ],
)
def test_api_token_scopes_narrow_the_client_roles(scopes, action, allowed) -> None:
    client = Principal(
        PrincipalKind.API_CLIENT,
        3,
        "ai-tool",
        {A: frozenset({Role.RECEIVER, Role.SENDER})},
        scopes=frozenset(scopes),
    )
    assert decide(client, action, study(A), Context(NOW), SNAPSHOT).allowed is allowed


INSTITUTION_CASES = [
    ({A: {Role.SENDER}}, Action.STORE, A, True, "membership-role"),
    ({A: {Role.VIEWER}}, Action.STORE, A, False, "default-deny"),
    ({A: {Role.SENDER}}, Action.STORE, B, False, "default-deny"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.ADMINISTER, A, True, "membership-role"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.ADMINISTER, A_CARDIO, True, "parent-administrator"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.ADMINISTER, B, False, "default-deny"),
    ({A_CARDIO: {Role.INSTITUTION_ADMIN}}, Action.ADMINISTER, A, False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.AUDIT, A, True, "membership-role"),
    # Oversight (transactions, the audit trail, statistics) is AUDIT on one institution.
    ({A: {Role.INSTITUTION_ADMIN}}, Action.AUDIT, A, True, "membership-role"),
    ({A: {Role.AUDITOR}}, Action.AUDIT, B, False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.ADMINISTER, A, False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.TRANSFER, A, False, "default-deny"),
    ({A: {Role.AUDITOR}}, Action.REQUEST, A, False, "default-deny"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.AUDIT, A_CARDIO, False, "default-deny"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.AUDIT, B, False, "default-deny"),
    ({A_CARDIO: {Role.AUDITOR}}, Action.AUDIT, A, False, "default-deny"),
    ({A: {Role.VIEWER, Role.RECEIVER, Role.SENDER}}, Action.AUDIT, A, False, "default-deny"),
    ({A: {Role.REQUESTER}}, Action.AUDIT, A, False, "default-deny"),
    ({A: {Role.REQUESTER}}, Action.REQUEST, A, True, "membership-role"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.HOLD, A, True, "membership-role"),
    ({A: {Role.INSTITUTION_ADMIN}}, Action.HOLD, B, False, "default-deny"),
    ({A: {Role.SENDER, Role.RECEIVER}}, Action.HOLD, A, False, "default-deny"),
    ({A: {Role.REQUESTER}}, Action.HOLD, A, False, "default-deny"),
]


@pytest.mark.parametrize(
    ("roles", "scopes", "allowed"),
    [
        ({Role.INSTITUTION_ADMIN}, {Scope.HOLD}, True),
        ({Role.INSTITUTION_ADMIN}, {Scope.READ, Scope.DOWNLOAD}, False),  # a read-only token
        ({Role.RECEIVER}, {Scope.HOLD}, False),  # the scope never adds to the roles
    ],
)
def test_a_hold_token_needs_the_hold_scope_and_an_administrator_role(roles, scopes, allowed):
    client = Principal(
        PrincipalKind.API_CLIENT, 4, "hold-tool", {A: frozenset(roles)}, scopes=frozenset(scopes)
    )
    assert decide(client, Action.HOLD, study(A), Context(NOW), SNAPSHOT).allowed is allowed


@pytest.mark.parametrize(("memberships", "action", "target", "allowed", "rule"), INSTITUTION_CASES)
def test_institution_decisions(memberships, action, target, allowed, rule) -> None:
    resource = Resource.institution(target)
    decision = decide(user(memberships), action, resource, Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (allowed, rule)


AUDIT_CLIENT_CASES = [
    # roles of the API client in A, its token's scopes, institution asked, allowed, rule
    ({Role.AUDITOR}, {Scope.AUDIT}, A, True, "membership-role"),
    ({Role.INSTITUTION_ADMIN}, {Scope.AUDIT}, A, True, "membership-role"),
    ({Role.AUDITOR}, {Scope.AUDIT}, B, False, "default-deny"),
    ({Role.INSTITUTION_ADMIN}, {Scope.READ, Scope.DOWNLOAD}, A, False, "default-deny"),  # read-only
    ({Role.VIEWER}, {Scope.AUDIT}, A, False, "default-deny"),  # the scope alone gives nothing
]


@pytest.mark.parametrize(("roles", "scopes", "target", "allowed", "rule"), AUDIT_CLIENT_CASES)
def test_audit_by_api_tokens_needs_the_scope_and_the_role(roles, scopes, target, allowed, rule):
    client = Principal(
        PrincipalKind.API_CLIENT, 3, "siem", {A: frozenset(roles)}, scopes=frozenset(scopes)
    )
    decision = decide(client, Action.AUDIT, Resource.institution(target), Context(NOW), SNAPSHOT)
    assert (decision.allowed, decision.rule) == (allowed, rule)


def test_a_system_administrator_oversees_every_institution_but_a_grant_gives_no_oversight():
    admin = user({}, system_admin=True)
    audit_b = decide(admin, Action.AUDIT, Resource.institution(B), Context(NOW), SNAPSHOT)
    assert (audit_b.allowed, audit_b.rule) == (True, "system-admin")
    # B holds a live grant on A's study: it reads the study, never A's oversight.
    recipient = user({B: {Role.INSTITUTION_ADMIN, Role.RECEIVER}})
    assert decide(recipient, Action.READ_METADATA, study(A, ACTIVE), Context(NOW), SNAPSHOT).allowed
    assert not decide(recipient, Action.AUDIT, Resource.institution(A), Context(NOW)).allowed
    # An auditor sees no study, not even its own institution's.
    auditor = user({A: {Role.AUDITOR}})
    assert not decide(auditor, Action.SEARCH, study(A), Context(NOW), SNAPSHOT).allowed


# -- destinations and hours -------------------------------------------------------------

LONDON_HOURS = CoreHoursFacts(
    timezone="Europe/London",
    weekdays=frozenset({1, 2, 3, 4, 5}),
    start=time(8, 0),
    end=time(18, 0),
    holidays=frozenset({date(2026, 12, 25)}),
)
NIGHT_HOURS = CoreHoursFacts(timezone="Europe/London", start=time(20, 0), end=time(6, 0))


@pytest.mark.parametrize(
    ("moment", "hours", "inside"),
    [
        (datetime(2026, 11, 25, 10, 0, tzinfo=UTC), LONDON_HOURS, True),  # Wednesday
        (datetime(2026, 11, 25, 7, 59, tzinfo=UTC), LONDON_HOURS, False),
        (datetime(2026, 11, 25, 18, 0, tzinfo=UTC), LONDON_HOURS, False),  # end is exclusive
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), LONDON_HOURS, False),  # Saturday
        (datetime(2026, 12, 25, 10, 0, tzinfo=UTC), LONDON_HOURS, False),  # holiday
        # British Summer Time: 07:30 UTC is 08:30 in London
        (datetime(2026, 7, 1, 7, 30, tzinfo=UTC), LONDON_HOURS, True),
        (datetime(2026, 7, 1, 17, 30, tzinfo=UTC), LONDON_HOURS, False),
        # the night of the change to summer time (29 March 2026, 01:00 UTC)
        (datetime(2026, 3, 30, 6, 59, tzinfo=UTC), LONDON_HOURS, False),
        (datetime(2026, 3, 30, 7, 0, tzinfo=UTC), LONDON_HOURS, True),
        # a window across midnight belongs to the day it started
        (datetime(2026, 11, 25, 23, 30, tzinfo=UTC), NIGHT_HOURS, True),
        (datetime(2026, 11, 26, 0, 0, tzinfo=UTC), NIGHT_HOURS, True),  # midnight
        (datetime(2026, 11, 26, 5, 59, tzinfo=UTC), NIGHT_HOURS, True),
        (datetime(2026, 11, 26, 6, 0, tzinfo=UTC), NIGHT_HOURS, False),
        (datetime(2026, 11, 28, 1, 0, tzinfo=UTC), NIGHT_HOURS, True),  # Friday night
        (datetime(2026, 11, 29, 1, 0, tzinfo=UTC), NIGHT_HOURS, False),  # Saturday night
    ],
)
def test_core_hours(moment, hours, inside) -> None:
    assert in_core_hours(moment, hours) is inside


NODE = 10
OUT_OF_HOURS_NODE = 11
ROUTED = PolicySnapshot(
    institutions={
        A: InstitutionFacts(A, "A"),
        B: InstitutionFacts(B, "B", hours=LONDON_HOURS, worklist_restricted=True),
    },
    nodes={
        NODE: NodeFacts(NODE, B, "B_PACS"),
        OUT_OF_HOURS_NODE: NodeFacts(OUT_OF_HOURS_NODE, B, "B_ONCALL"),
    },
    rules=(
        RuleFacts(1, B, NODE, A, window="core", out_of_hours_node_pk=OUT_OF_HOURS_NODE),
        RuleFacts(2, B, None, A, window="always"),
    ),
)
SENDER = {A: {Role.SENDER}}
WEDNESDAY_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WEDNESDAY_NIGHT = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("memberships", "node", "moment", "allowed", "obligation"),
    [
        (SENDER, NODE, WEDNESDAY_NOON, True, f"route-to:node:{NODE}"),
        (SENDER, NODE, WEDNESDAY_NIGHT, True, f"route-to:node:{OUT_OF_HOURS_NODE}"),
        (SENDER, None, WEDNESDAY_NIGHT, True, "route-to:worklist"),
        (SENDER, OUT_OF_HOURS_NODE, WEDNESDAY_NOON, False, None),  # no rule: restricted
        ({A: {Role.VIEWER}}, NODE, WEDNESDAY_NOON, False, None),  # not a sender
        ({B: {Role.SENDER}}, NODE, WEDNESDAY_NOON, False, None),  # sends for B, not A
    ],
)
def test_destination_rules_and_windows(memberships, node, moment, allowed, obligation) -> None:
    resource = Resource.destination(B, node, A)
    decision = decide(user(memberships), Action.TRANSFER, resource, Context(moment), ROUTED)
    assert decision.allowed is allowed
    if obligation:
        assert obligation in decision.obligations


def test_a_destination_that_takes_only_pseudonymised_copies() -> None:
    research = replace(
        ROUTED,
        rules=(RuleFacts(3, B, None, A, window="always", pseudonymised_only=True),),
    )
    studies = Resource.destination(B, None, A)
    copies = Resource.destination(B, None, A, pseudonymised=True)
    refused = decide(user(SENDER), Action.TRANSFER, studies, Context(WEDNESDAY_NOON), research)
    assert (refused.allowed, refused.rule) == (False, "pseudonymised-only")
    assert refused.reason == "B takes only pseudonymised copies from this sender"
    allowed = decide(user(SENDER), Action.TRANSFER, copies, Context(WEDNESDAY_NOON), research)
    assert allowed.allowed and "route-to:worklist" in allowed.obligations
    # Copies pass a plain rule too; another sender's copies pass no rule of A's.
    assert decide(user(SENDER), Action.TRANSFER, copies, Context(WEDNESDAY_NOON), ROUTED).allowed
    other = Resource.destination(B, None, A_CARDIO, pseudonymised=True)
    theirs = decide(user({A_CARDIO: {Role.SENDER}}), Action.TRANSFER, other, Context(NOW), research)
    assert (theirs.allowed, theirs.rule) == (False, "default-deny")


def test_an_unrestricted_destination_takes_any_sender() -> None:
    open_snapshot = PolicySnapshot(
        institutions={B: InstitutionFacts(B, "B", worklist_restricted=False)}
    )
    resource = Resource.destination(B, None, A)
    decision = decide(user(SENDER), Action.TRANSFER, resource, Context(NOW), open_snapshot)
    assert (decision.allowed, decision.rule) == (True, "unrestricted-destination")


def test_decide_is_deterministic() -> None:
    principal = user({B: {Role.VIEWER}})
    first = decide(principal, Action.SEARCH, study(A, ACTIVE), Context(NOW), SNAPSHOT)
    assert all(
        decide(principal, Action.SEARCH, study(A, ACTIVE), Context(NOW), SNAPSHOT) == first
        for _ in range(20)
    )


# -- properties ---------------------------------------------------------------------------

institutions = st.integers(min_value=1, max_value=6)
role_sets = st.frozensets(st.sampled_from(list(Role)), max_size=3)
grants = st.builds(
    GrantFacts,
    institution_pk=institutions,
    expires_at=st.one_of(
        st.none(), st.sampled_from([NOW - timedelta(days=1), NOW + timedelta(days=1)])
    ),
    revoked_at=st.one_of(
        st.none(), st.sampled_from([NOW - timedelta(minutes=1), NOW + timedelta(minutes=1)])
    ),
    actions=st.frozensets(
        st.sampled_from(["search", "read-metadata", "read-pixels", "download", "delete", "store"])
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    memberships=st.dictionaries(institutions, role_sets, max_size=3),
    owner=st.one_of(st.none(), institutions),
    study_grants=st.lists(grants, max_size=3),
    action=st.sampled_from([Action.SEARCH, Action.READ_PIXELS, Action.DOWNLOAD, Action.DELETE]),
)
def test_nobody_reaches_a_study_without_an_owning_or_granted_path(
    memberships, owner, study_grants, action
) -> None:
    principal = Principal(PrincipalKind.USER, 1, "p", memberships)
    resource = Resource.study("1.2.3", owner, tuple(study_grants))
    decision = decide(principal, action, resource, Context(NOW), PolicySnapshot())
    allowed_in = principal.institutions_for(action)
    owning = owner is not None and owner in allowed_in
    granted = any(
        g.institution_pk in allowed_in
        and g.active(NOW)
        and action.value in g.actions
        and action is not Action.DELETE  # whatever a row says
        for g in study_grants
    )
    assert decision.allowed == (owning or granted)
    if decision.allowed and not owning:
        assert action is not Action.DELETE  # no grant ever lets its holder delete


# -- transfers and study-limited tokens (one line a case) --------------------------------------

SENDER_PK, RECEIVER_PK, OTHER_PK = 1, 2, 3
TRANSFER_CASES = [
    # memberships, action, allowed, rule, side
    ({SENDER_PK: {Role.SENDER}}, Action.TRANSFER, True, "transfer-party", "side:sender"),
    ({RECEIVER_PK: {Role.RECEIVER}}, Action.DOWNLOAD, True, "transfer-party", "side:receiver"),
    ({RECEIVER_PK: {Role.VIEWER}}, Action.READ_PIXELS, True, "transfer-party", "side:receiver"),
    ({RECEIVER_PK: {Role.REQUESTER}}, Action.DOWNLOAD, False, "transfer-party", None),
    ({RECEIVER_PK: {Role.REQUESTER}}, Action.READ_PIXELS, False, "transfer-party", None),
    ({RECEIVER_PK: {Role.RECEIVER}}, Action.TRANSFER, False, "transfer-party", None),
    ({OTHER_PK: {Role.SENDER, Role.RECEIVER}}, Action.SEARCH, False, "transfer-party", None),
]


@pytest.mark.parametrize(("memberships", "action", "allowed", "rule", "side"), TRANSFER_CASES)
def test_transfer_decisions(memberships, action, allowed, rule, side) -> None:
    resource = Resource.transfer(SENDER_PK, RECEIVER_PK)
    decision = decide(user(memberships), action, resource, Context(NOW))
    assert (decision.allowed, decision.rule) == (allowed, rule)
    if side:
        assert side in decision.obligations


def test_a_study_limited_token_reads_its_study_and_nothing_else() -> None:
    limited = dataclasses.replace(user({1: {Role.RECEIVER}}), studies=frozenset({"1.2.3"}))
    now = Context(NOW)
    assert decide(limited, Action.READ_PIXELS, Resource.study("1.2.3", 1), now).allowed
    other = decide(limited, Action.READ_PIXELS, Resource.study("1.2.4", 1), now)
    assert (other.allowed, other.rule) == (False, "study-limited")
    listing = decide(limited, Action.SEARCH, Resource.transfer(1, 1), now)
    assert (listing.allowed, listing.rule) == (False, "study-limited")


# -- requests (one line a case) ----------------------------------------------------------------

ASKING_PK, ASKED_PK = 1, 2
REQUEST_CASES = [
    # memberships, action, allowed, rule, side
    ({ASKING_PK: {Role.REQUESTER}}, Action.REQUEST, True, "request-party", "side:requester"),
    ({ASKING_PK: {Role.REQUESTER}}, Action.SEARCH, True, "request-party", "side:requester"),
    ({ASKING_PK: {Role.REQUESTER}}, Action.ANSWER, False, "request-party", None),
    ({ASKING_PK: {Role.VIEWER}}, Action.SEARCH, False, "request-party", None),
    ({ASKED_PK: {Role.SENDER}}, Action.ANSWER, True, "request-party", "side:answerer"),
    ({ASKED_PK: {Role.SENDER}}, Action.SEARCH, True, "request-party", "side:answerer"),
    ({ASKED_PK: {Role.INSTITUTION_ADMIN}}, Action.ANSWER, True, "request-party", "side:answerer"),
    ({ASKED_PK: {Role.REQUESTER}}, Action.ANSWER, False, "request-party", None),
    ({ASKED_PK: {Role.REQUESTER}}, Action.SEARCH, False, "request-party", None),
    ({ASKED_PK: {Role.SENDER}}, Action.REQUEST, False, "request-party", None),
    ({ASKED_PK: {Role.RECEIVER, Role.VIEWER}}, Action.ANSWER, False, "request-party", None),
    ({OTHER_PK: {Role.SENDER, Role.REQUESTER}}, Action.SEARCH, False, "request-party", None),
    ({OTHER_PK: {Role.INSTITUTION_ADMIN}}, Action.ANSWER, False, "request-party", None),
]


@pytest.mark.parametrize(("memberships", "action", "allowed", "rule", "side"), REQUEST_CASES)
def test_request_decisions(memberships, action, allowed, rule, side) -> None:
    resource = Resource.request(ASKING_PK, ASKED_PK)
    decision = decide(user(memberships), action, resource, Context(NOW))
    assert (decision.allowed, decision.rule) == (allowed, rule)
    if side:
        assert side in decision.obligations


def test_a_study_limited_token_sees_no_request() -> None:
    limited = dataclasses.replace(user({ASKED_PK: {Role.SENDER}}), studies=frozenset({"1.2.3"}))
    decision = decide(limited, Action.ANSWER, Resource.request(ASKING_PK, ASKED_PK), Context(NOW))
    assert (decision.allowed, decision.rule) == (False, "study-limited")
