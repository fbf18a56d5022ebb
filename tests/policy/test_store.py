"""The policy storage adapter against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import Engine

from archive.store import Archive
from policy import store
from policy.decision import Context, NodeFacts, Resource, decide
from policy.models import UserStatus
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role
from tests.foundation.test_ae_titles import REFUSED as REFUSED_AE_TITLES

PASSWORD = "correct horse battery"


@pytest.fixture
def engine(archive: Archive) -> Engine:
    return archive.engine


def test_institutions_and_security_institutions(engine):
    parent = store.create_institution(engine, "NORTH", "North Hospital", timezone="Europe/Paris")
    child = store.create_institution(engine, "NORTH-CARD", "Cardiology", parent_pk=parent.pk)
    assert child.parent_pk == parent.pk
    assert [i.code for i in store.security_institutions(engine, parent.pk)] == ["NORTH-CARD"]
    assert store.find_institution(engine, "NORTH").timezone == "Europe/Paris"
    updated = store.update_institution(engine, parent.pk, contact="pacs@north.example")
    assert store.get_institution(engine, parent.pk).contact == updated.contact
    assert [i.code for i in store.list_institutions(engine, [child.pk])] == ["NORTH-CARD"]


@pytest.mark.parametrize(
    ("code", "name", "timezone", "error"),
    [
        ("", "x", "UTC", store.InvalidRecord),
        ("has space", "x", "UTC", store.InvalidRecord),
        ("X" * 33, "x", "UTC", store.InvalidRecord),
        ("OK", "", "UTC", store.InvalidRecord),
        ("OK", "x", "Mars/Olympus", store.InvalidRecord),
        ("OK", "x", "../../etc/passwd", store.InvalidRecord),
    ],
)
def test_bad_institutions_are_refused(engine, code, name, timezone, error):
    with pytest.raises(error):
        store.create_institution(engine, code, name, timezone=timezone)


def test_duplicates_and_unknowns(engine):
    parent = store.create_institution(engine, "A", "A")
    with pytest.raises(store.DuplicateRecord, match="code 'A' exists"):
        store.create_institution(engine, "A", "again")
    child = store.create_institution(engine, "A1", "child", parent_pk=parent.pk)
    with pytest.raises(store.InvalidRecord, match="cannot have security institutions"):
        store.create_institution(engine, "A11", "grandchild", parent_pk=child.pk)
    with pytest.raises(store.UnknownRecord):
        store.create_institution(engine, "B", "B", parent_pk=9999)
    with pytest.raises(store.UnknownRecord):
        store.find_institution(engine, "nope")


def test_users_memberships_and_token_version(engine):
    north = store.create_institution(engine, "NORTH", "North")
    user = store.create_user(engine, "Ada@Example.org", name="Ada", password=PASSWORD)
    assert user.email == "ada@example.org"
    assert user.password_hash.startswith("$argon2id$")
    with pytest.raises(store.DuplicateRecord):
        store.create_user(engine, "ada@example.org")
    store.set_membership(engine, user.pk, north.pk, "receiver,sender")
    assert store.load_memberships(engine, user.pk) == {north.pk: {Role.SENDER, Role.RECEIVER}}
    assert [u.email for u in store.list_users(engine, [north.pk])] == ["ada@example.org"]
    before = store.get_user(engine, user.pk).token_version
    disabled = store.update_user(engine, user.pk, status=UserStatus.DISABLED)
    assert disabled.token_version > before
    store.remove_membership(engine, user.pk, north.pk)
    assert store.load_memberships(engine, user.pk) == {}
    assert store.list_users(engine, [north.pk]) == []


@pytest.mark.parametrize(
    ("email", "password", "roles"),
    [
        ("not-an-email", PASSWORD, "viewer"),
        ("a@b.c", "short", "viewer"),
        ("a@b.c", PASSWORD, "wizard"),
    ],
)
def test_bad_users_are_refused(engine, email, password, roles):
    north = store.create_institution(engine, "NORTH", "North")
    with pytest.raises(store.InvalidRecord):
        user = store.create_user(engine, email, password=password)
        store.set_membership(engine, user.pk, north.pk, roles)


def test_registration_approved(engine):
    north = store.create_institution(engine, "NORTH", "North")
    registration = store.register(engine, "bo@example.org", "Bo", PASSWORD, north.pk)
    assert registration is not None
    assert store.get_user(engine, registration.user_pk).status is UserStatus.PENDING
    queue = store.list_registrations(engine, [north.pk])
    assert [user.email for _, user in queue] == ["bo@example.org"]
    # The same email again creates nothing, and says nothing about who has an account.
    assert store.register(engine, "BO@example.org", "Bo", PASSWORD, north.pk) is None
    approved = store.approve_registration(engine, registration.pk, "viewer", None)
    assert approved.status == "approved"
    assert approved.confirmation_recorded_at is not None
    assert store.get_user(engine, registration.user_pk).status is UserStatus.ACTIVE
    assert store.load_memberships(engine, registration.user_pk) == {north.pk: {Role.VIEWER}}
    assert store.list_registrations(engine, [north.pk]) == []
    with pytest.raises(store.DuplicateRecord, match="already approved"):
        store.reject_registration(engine, registration.pk, None)


def test_registration_rejected(engine):
    north = store.create_institution(engine, "NORTH", "North")
    registration = store.register(engine, "cy@example.org", "Cy", PASSWORD, north.pk)
    rejected = store.reject_registration(engine, registration.pk, None, note="unknown to us")
    assert (rejected.status, rejected.note) == ("rejected", "unknown to us")
    assert store.get_user(engine, registration.user_pk).status is UserStatus.PENDING
    assert store.load_memberships(engine, registration.user_pk) == {}
    with pytest.raises(store.InvalidRecord):
        store.approve_registration(engine, registration.pk, "", None)


def test_api_tokens_are_shown_once_and_stored_hashed(engine):
    north = store.create_institution(engine, "NORTH", "North")
    client = store.create_api_client(engine, "segmenter", north.pk, "receiver")
    issued = store.issue_api_token(engine, client.pk, "read,download")
    prefix, token_id, secret = issued.token.split("_", 2)
    assert (prefix, token_id) == ("ferry", issued.record.token_id)
    [stored] = store.list_api_tokens(engine, client.pk)
    assert stored.secret_hash == store.hash_token_secret(secret)
    assert secret not in stored.secret_hash
    assert stored.scopes == "download,read"
    store.revoke_api_token(engine, client.pk, token_id)
    assert store.list_api_tokens(engine, client.pk)[0].revoked_at is not None
    second = store.issue_api_token(engine, client.pk, ["write"])
    store.revoke_api_client(engine, client.pk)
    assert all(t.revoked_at is not None for t in store.list_api_tokens(engine, client.pk))
    assert second.record.token_id != token_id
    with pytest.raises(store.InvalidRecord, match="revoked"):
        store.issue_api_token(engine, client.pk)


@pytest.mark.parametrize(
    ("scopes", "expires"),
    [("admin", None), ("", None), ("read", datetime(2000, 1, 1, tzinfo=UTC))],
)
def test_bad_tokens_are_refused(engine, scopes, expires):
    north = store.create_institution(engine, "NORTH", "North")
    client = store.create_api_client(engine, "tool", north.pk, "viewer")
    with pytest.raises(store.InvalidRecord):
        store.issue_api_token(engine, client.pk, scopes, expires)


def test_nodes_permissions_and_rules(engine):
    north = store.create_institution(engine, "NORTH", "North")
    south = store.create_institution(engine, "SOUTH", "South")
    pacs = store.create_node(
        engine, NodeFacts(0, north.pk, "NORTH_PACS", host="10.0.0.1", port=104)
    )
    night = store.create_node(
        engine, NodeFacts(0, north.pk, "NORTH_NIGHT", host="10.0.0.2", port=104, tls=True)
    )
    with pytest.raises(store.DuplicateRecord):
        store.create_node(engine, NodeFacts(0, south.pk, "NORTH_PACS", host="10.0.0.3", port=104))
    permission = store.add_node_permission(engine, pacs.pk, "role", "sender", can_write=True)
    assert [p.pk for p in store.list_node_permissions(engine, pacs.pk)] == [permission.pk]
    rule = store.create_destination_rule(
        engine,
        north.pk,
        node_pk=pacs.pk,
        sender_institution_pk=south.pk,
        window="core",
        out_of_hours_node_pk=night.pk,
    )
    moved = store.update_node(engine, replace(store.node_facts(pacs), port=11112, tls=True))
    assert (moved.port, moved.tls, moved.ae_title) == (11112, True, "NORTH_PACS")
    with pytest.raises(store.InvalidRecord):
        store.update_node(engine, replace(store.node_facts(pacs), port=0))
    with pytest.raises(store.UnknownRecord):
        store.update_node(engine, replace(store.node_facts(pacs), pk=pacs.pk + 100))
    with pytest.raises(store.DuplicateRecord, match="still names node"):
        store.delete_node(engine, night.pk)
    with pytest.raises(store.UnknownRecord):  # a node of another institution
        store.create_destination_rule(engine, south.pk, node_pk=pacs.pk)
    store.delete_destination_rule(engine, rule.pk)
    store.delete_node(engine, pacs.pk)
    assert [n.ae_title for n in store.list_nodes(engine)] == ["NORTH_NIGHT"]


@pytest.mark.parametrize(
    ("ae_title", "port"), [*((title, 104) for title in REFUSED_AE_TITLES), ("OK", 0)]
)
def test_bad_nodes_are_refused(engine, ae_title, port):
    north = store.create_institution(engine, "NORTH", "North")
    with pytest.raises(store.InvalidRecord):
        store.create_node(engine, NodeFacts(0, north.pk, ae_title, host="host", port=port))


def test_snapshot_drives_decisions(engine):
    """Rules written through the store decide a send at 20:00 local time on a weekday."""
    north = store.create_institution(engine, "NORTH", "North", timezone="Europe/Paris")
    south = store.create_institution(engine, "SOUTH", "South")
    night = store.create_node(engine, NodeFacts(0, north.pk, "NIGHT", host="10.0.0.2", port=104))
    store.set_core_hours(engine, north.pk, [1, 2, 3, 4, 5], "07:30", "19:00")
    store.add_holiday(engine, north.pk, date(2026, 12, 25), "Christmas")
    store.create_destination_rule(
        engine,
        north.pk,
        sender_institution_pk=south.pk,
        window="core",
        out_of_hours_node_pk=night.pk,
    )
    snap = store.snapshot(engine)
    facts = snap.institutions[north.pk]
    assert facts.hours.start == time(7, 30) and date(2026, 12, 25) in facts.hours.holidays
    assert snap.nodes[night.pk].ae_title == "NIGHT"
    sender = Principal(PrincipalKind.USER, 1, "s", {south.pk: frozenset({Role.SENDER})})
    evening = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)  # Wednesday, 20:00 in Paris
    decision = decide(
        sender,
        Action.TRANSFER,
        Resource.destination(north.pk, None, south.pk),
        Context(evening),
        snap,
    )
    assert decision.allowed and f"route-to:node:{night.pk}" in decision.obligations
    morning = decide(
        sender,
        Action.TRANSFER,
        Resource.destination(north.pk, None, south.pk),
        Context(evening - timedelta(hours=9)),
        snap,
    )
    assert morning.obligations == ("audit", "route-to:worklist")


@pytest.mark.parametrize(
    ("weekdays", "start", "end"),
    [([0], "08:00", "18:00"), ([8], "08:00", "18:00"), ([1], "25:00", "18:00"), ([1], "8", "8")],
)
def test_bad_hours_are_refused(engine, weekdays, start, end):
    north = store.create_institution(engine, "NORTH", "North")
    with pytest.raises(store.InvalidRecord):
        store.set_core_hours(engine, north.pk, weekdays, start, end)


def test_holidays(engine):
    north = store.create_institution(engine, "NORTH", "North")
    store.add_holiday(engine, north.pk, date(2026, 5, 1), "Labour Day")
    with pytest.raises(store.DuplicateRecord):
        store.add_holiday(engine, north.pk, date(2026, 5, 1))
    store.remove_holiday(engine, north.pk, date(2026, 5, 1))
    assert store.list_holidays(engine, north.pk) == []
    with pytest.raises(store.UnknownRecord):
        store.remove_holiday(engine, north.pk, date(2026, 5, 1))
