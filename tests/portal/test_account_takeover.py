"""Attacks on accounts through the admin API, over a real server: each one refused and audited."""

from __future__ import annotations

import httpx
from sqlmodel import Session, select

from audit.models import AuditEvent
from policy import store
from tests.conftest import issue_token_for
from tests.policy._people import add_api_token
from tests.portal.test_admin_api import PASSWORD, _study, sign_in

NEW_PASSWORD = "a brand new password 42"


def _events(world, rule: str) -> list[AuditEvent]:
    with Session(world.server.archive.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.rule == rule)))


def _root(world) -> int:
    """A system administrator who can sign in with a password."""
    engine = world.server.archive.engine
    return store.create_user(engine, "ops@ferry.test", password=PASSWORD, system_admin=True).pk


def test_an_institution_admin_cannot_take_over_a_system_administrator(world):
    root = _root(world)
    # Step 1 of the attack: make the system administrator a member of one's institution.
    added = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/memberships",
        {"email": "ops@ferry.test", "roles": ["viewer"]},
    )
    assert (added.status_code, added.json()["outcome"]) == (202, "invited")
    members = world.get("north-admin", "/institutions/NORTH/memberships").json()
    assert "ops@ferry.test" not in {m["email"] for m in members}
    assert (
        world.send("north-admin", "PATCH", f"/users/{root}", {"password": NEW_PASSWORD}).status_code
        == 404
    )
    # Even when the system administrator is a member (they accepted, say), step 2 is refused.
    store.set_membership(world.server.archive.engine, root, world.pks["NORTH"], "viewer")
    taken = world.send("north-admin", "PATCH", f"/users/{root}", {"password": NEW_PASSWORD})
    assert taken.status_code == 403
    assert "system administrator" in taken.json()["error"]
    assert sign_in(world.http, "ops@ferry.test", NEW_PASSWORD).status_code == 401
    assert sign_in(world.http, "ops@ferry.test").status_code == 200
    for method, body in (("PUT", {"roles": ["admin"]}), ("DELETE", None)):
        path = f"/institutions/NORTH/memberships/{root}"
        assert world.send("north-admin", method, path, body).status_code == 403
    denied = _events(world, "system-account")
    assert sorted(e.action for e in denied) == ["administer"] * 3 + ["invite"]
    assert {e.outcome for e in denied} == {"denied"}
    assert all(e.actor == "user:na@north.test" for e in denied)
    # A system administrator may.
    done = world.send("system", "PATCH", f"/users/{root}", {"password": NEW_PASSWORD})
    assert done.status_code == 200, done.text
    assert sign_in(world.http, "ops@ferry.test", NEW_PASSWORD).status_code == 200


def test_an_account_shared_with_another_institution_is_not_the_admins_alone(world):
    both = world.pks["both"]
    for change in ({"password": NEW_PASSWORD}, {"status": "disabled"}, {"name": "X"}):
        refused = world.send("north-admin", "PATCH", f"/users/{both}", change)
        assert refused.status_code == 403, refused.text
    assert len(_events(world, "account-beyond-your-institutions")) == 3
    viewer = world.pks["north-viewer"]
    assert (
        world.send(
            "north-admin", "PATCH", f"/users/{viewer}", {"password": NEW_PASSWORD}
        ).status_code
        == 200
    )


def test_another_institutions_person_is_invited_and_accepts(world):
    """The invitee's answer, and the same answer for an unknown email; accepting needs them."""
    body = {"email": "sa@south.test", "roles": ["viewer"]}
    invited = world.send("north-admin", "POST", "/institutions/NORTH/memberships", body)
    nobody = world.send(
        "north-admin", "POST", "/institutions/NORTH/memberships", {**body, "email": "x@y.test"}
    )
    assert invited.status_code == nobody.status_code == 202
    assert invited.json() == nobody.json()
    assert [e.reason for e in _events(world, "no-such-account")] == ["no account has this email"]
    [offer] = world.get("south-admin", "/invitations").json()
    me = world.http.get("/auth/me", headers=world.as_("south-admin")).json()
    assert str(world.pks["NORTH"]) not in me["memberships"]  # nothing granted before accepting
    declined = world.send("south-admin", "POST", f"/invitations/{offer['pk']}/decline", {})
    assert declined.status_code == 200
    me = world.http.get("/auth/me", headers=world.as_("south-admin")).json()
    assert str(world.pks["NORTH"]) not in me["memberships"]


def test_a_parent_administrator_cannot_let_themselves_into_a_security_institution(world):
    engine = world.server.archive.engine
    uid = _study(world.server, world.pks["NORTH-CARD"])
    attempts = [
        ("POST", "/institutions/NORTH-CARD/memberships",
         {"email": "na@north.test", "roles": ["viewer"]}),
        ("POST", "/users", {"email": "alias@north.test", "password": PASSWORD,
                            "institution": "NORTH-CARD", "roles": ["viewer"]}),
        ("POST", "/institutions/NORTH-CARD/api-clients", {"name": "x", "roles": ["viewer"]}),
        ("POST", "/grants", {"study_uid": uid, "institution": "NORTH"}),
        ("POST", "/institutions/NORTH-CARD/nodes",
         {"ae_title": "SPY", "host": "h", "port": 104, "can_query": True}),
    ]  # fmt: skip
    for method, path, body in attempts:
        refused = world.send("north-admin", method, path, body)
        assert refused.status_code == 403, (path, refused.text)
        assert "security institution" in refused.json()["error"]
    assert len(_events(world, "security-institution-access")) == len(attempts)
    assert store.load_memberships(engine, world.pks["north-admin"]).keys() == {world.pks["NORTH"]}
    # The parent's administrators still run its settings.
    hours = {"weekdays": [1, 2], "start": "08:00", "end": "18:00"}
    assert (
        world.send("north-admin", "PUT", "/institutions/NORTH-CARD/hours", hours).status_code == 200
    )
    # A system administrator lets them in.
    body = {"email": "na@north.test", "roles": ["viewer"]}
    added = world.send("system", "POST", "/institutions/NORTH-CARD/memberships", body)
    assert added.json()["outcome"] == "added"


def test_account_and_access_operations_refuse_everyone_else(world):
    """Another institution's admin, a requester, a read-only API token, an admin beyond theirs."""
    engine = world.server.archive.engine
    requester = store.create_user(engine, "rq@north.test")
    store.set_membership(engine, requester.pk, world.pks["NORTH"], "requester")
    world.tokens["requester"] = issue_token_for(
        world.server.app, world.server.archive, requester.pk
    )
    token, _, _ = add_api_token(engine, world.pks["NORTH"], roles="admin", scopes="read")
    world.tokens["read-token"] = token
    viewer = world.pks["north-viewer"]
    uid = _study(world.server, world.pks["NORTH"])
    operations = [
        ("PATCH", f"/users/{viewer}", {"password": NEW_PASSWORD}),
        ("POST", "/institutions/NORTH/memberships", {"email": "nv@north.test", "roles": ["admin"]}),
        ("PUT", f"/institutions/NORTH/memberships/{viewer}", {"roles": ["admin"]}),
        ("POST", "/institutions/NORTH/api-clients", {"name": "x", "roles": ["viewer"]}),
        ("POST", "/users", {"email": "n2@north.test", "institution": "NORTH", "roles": ["viewer"]}),
        ("POST", "/grants", {"study_uid": uid, "institution": "SOUTH"}),
        ("POST", "/institutions/NORTH/nodes",
         {"ae_title": "Q", "host": "h", "port": 1, "can_query": True}),
    ]  # fmt: skip
    for who in ("south-admin", "requester", "read-token"):
        for method, path, body in operations:
            refused = world.send(who, method, path, body)
            assert refused.status_code in {403, 404}, (who, path, refused.text)
    beyond = world.send(
        "north-admin", "PATCH", f"/users/{world.pks['both']}", {"password": NEW_PASSWORD}
    )
    assert beyond.status_code == 403
    assert (
        world.send(
            "north-admin", "PATCH", f"/users/{world.pks['south-admin']}", {"name": "x"}
        ).status_code
        == 404
    )
    assert (
        httpx.get(
            f"{world.server.base_url}/api/invitations", headers=world.as_("read-token")
        ).status_code
        == 403
    )
