"""The admin JSON API over a real server: each administrator sees and changes only their own."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from archive.models import Patient, Study
from policy import store
from tests.conftest import RunningServer, issue_token_for

PASSWORD = "correct horse battery staple"


@dataclass
class World:
    http: httpx.Client
    server: RunningServer
    tokens: dict[str, str]
    pks: dict[str, int]

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **kwargs) -> httpx.Response:
        return self.http.get(f"/api{path}", headers=self.as_(who), **kwargs)

    def send(self, who: str, method: str, path: str, body: object = None) -> httpx.Response:
        return self.http.request(method, f"/api{path}", headers=self.as_(who), json=body)


def sign_in(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    """Portal sign-in, in a client of its own so the session cookie stays out of `http`."""
    body = {"email": email, "password": password}
    return httpx.post(f"{str(http.base_url).rstrip('/')}/auth/login", json=body, timeout=30)


@pytest.fixture
def world(server: RunningServer):
    """NORTH (with security institution NORTH-CARD) and SOUTH, their admins, a viewer of NORTH,
    a system administrator, and a user who belongs to both."""
    engine = server.archive.engine
    north = store.create_institution(engine, "NORTH", "North Hospital", timezone="Europe/Paris")
    south = store.create_institution(engine, "SOUTH", "South Clinic")
    card = store.create_institution(engine, "NORTH-CARD", "Cardiology", parent_pk=north.pk)
    people = {
        "system": ("root@ferry.test", None),
        "north-admin": ("na@north.test", {north.pk: "admin"}),
        "south-admin": ("sa@south.test", {south.pk: "admin"}),
        "north-viewer": ("nv@north.test", {north.pk: "viewer"}),
        "both": ("both@ferry.test", {north.pk: "sender", south.pk: "receiver"}),
    }
    pks = {"NORTH": north.pk, "SOUTH": south.pk, "NORTH-CARD": card.pk}
    tokens = {}
    for who, (email, memberships) in people.items():
        user = store.create_user(engine, email, system_admin=memberships is None)
        for institution_pk, roles in (memberships or {}).items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        tokens[who], pks[who] = issue_token_for(server.app, server.archive, user.pk), user.pk
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield World(http, server, tokens, pks)


def codes(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["code"] for item in response.json()}


def test_system_admin_sees_and_changes_everything(world):
    assert {"NORTH", "SOUTH", "NORTH-CARD"} <= codes(world.get("system", "/institutions"))
    emails = {u["email"] for u in world.get("system", "/users").json()}
    assert {"na@north.test", "sa@south.test", "root@ferry.test"} <= emails
    created = world.send("system", "POST", "/institutions", {"code": "EAST", "name": "East"})
    assert created.status_code == 201, created.text
    assert created.json()["timezone"] == "UTC"
    changed = world.send("system", "PATCH", "/institutions/SOUTH", {"contact": "it@south.test"})
    assert changed.json()["contact"] == "it@south.test"


def test_administrators_see_only_their_own(world):
    assert codes(world.get("north-admin", "/institutions")) == {"NORTH", "NORTH-CARD"}
    assert codes(world.get("south-admin", "/institutions")) == {"SOUTH"}
    unknown = world.get("north-admin", "/institutions/NOWHERE")
    foreign = world.get("north-admin", "/institutions/SOUTH")
    assert unknown.status_code == foreign.status_code == 404
    assert foreign.json()["error"] == "no institution 'SOUTH'"  # as if it did not exist
    patch = world.send("north-admin", "PATCH", "/institutions/SOUTH", {"name": "Mine now"})
    assert patch.status_code == 404
    assert world.get("system", "/institutions/SOUTH").json()["name"] == "South Clinic"
    for path in ("/memberships", "/nodes", "/api-clients", "/hours", "/grants", "/registrations"):
        assert world.get("north-admin", f"/institutions/SOUTH{path}").status_code == 404
    emails = {u["email"] for u in world.get("north-admin", "/users").json()}
    assert emails == {"na@north.test", "nv@north.test", "both@ferry.test"}
    assert world.get("north-admin", f"/users/{world.pks['south-admin']}").status_code == 404
    [both] = [u for u in world.get("north-admin", "/users").json() if u["email"].startswith("both")]
    assert [m["institution"] for m in both["memberships"]] == ["NORTH"]  # not SOUTH's roles


def test_a_shared_user_is_changed_only_by_admins_of_all_their_institutions(world):
    both = world.pks["both"]
    refused = world.send("north-admin", "PATCH", f"/users/{both}", {"status": "disabled"})
    assert refused.status_code == 403
    assert "institutions you do not administer" in refused.json()["error"]
    done = world.send("system", "PATCH", f"/users/{both}", {"status": "disabled"})
    assert done.json()["status"] == "disabled"
    assert world.http.get("/auth/me", headers=world.as_("both")).status_code == 401
    viewer = world.pks["north-viewer"]
    renamed = world.send("north-admin", "PATCH", f"/users/{viewer}", {"name": "Nina"})
    assert renamed.json()["name"] == "Nina"
    escalate = world.send("north-admin", "PATCH", f"/users/{viewer}", {"system_admin": True})
    assert escalate.status_code == 403
    myself = f"/users/{world.pks['system']}"
    for change in ({"status": "disabled"}, {"system_admin": False}):
        refused = world.send("system", "PATCH", myself, change)
        assert refused.status_code == 403 and "your own" in refused.json()["error"]


def test_members_without_the_admin_role_are_refused_with_a_reason(world):
    assert world.get("north-viewer", "/institutions").json() == []
    refused = world.get("north-viewer", "/institutions/NORTH")
    assert refused.status_code == 403
    assert "may not administer" in refused.json()["error"]
    assert world.get("north-viewer", "/institutions/SOUTH").status_code == 404


def test_security_institutions_are_administered_from_their_parent(world):
    made = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/security-institutions",
        {"code": "N-BR", "name": "Breast"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["timezone"] == "Europe/Paris"  # the parent's
    listed = world.get("north-admin", "/institutions/NORTH/security-institutions")
    assert codes(listed) == {"NORTH-CARD", "N-BR"}
    assert world.get("north-admin", "/institutions/N-BR/nodes").json() == []
    top = world.send("north-admin", "POST", "/institutions", {"code": "X", "name": "X"})
    assert top.status_code == 403
    nested = world.send(
        "north-admin",
        "POST",
        "/institutions/N-BR/security-institutions",
        {"code": "Y", "name": "Y"},
    )
    assert nested.status_code == 400


def test_memberships(world):
    """Another institution's person is invited, accepts while signed in, and is then a member."""
    invited = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/memberships",
        {"email": "SA@south.test", "roles": ["viewer"]},
    )
    assert invited.status_code == 202, invited.text
    assert invited.json()["outcome"] == "invited"
    unknown = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/memberships",
        {"email": "no@one.test", "roles": ["viewer"]},
    )
    assert (unknown.status_code, unknown.json()) == (202, invited.json())  # no account oracle
    south_admin = world.pks["south-admin"]
    path = f"/institutions/NORTH/memberships/{south_admin}"
    assert world.send("north-admin", "PUT", path, {"roles": ["viewer"]}).status_code == 404
    assert world.get("north-admin", "/invitations").json() == []
    [offer] = world.get("south-admin", "/invitations").json()
    assert (offer["institution"], offer["roles"]) == ("NORTH", ["viewer"])
    accept = f"/invitations/{offer['pk']}/accept"
    assert world.send("north-admin", "POST", accept, {}).status_code == 404  # not theirs to accept
    assert world.send("south-admin", "POST", accept, {}).status_code == 200
    assert world.send("south-admin", "POST", accept, {}).status_code == 404  # spent
    changed = world.send("north-admin", "PUT", path, {"roles": ["receiver", "viewer"]})
    assert changed.json()["roles"] == ["receiver", "viewer"]
    # A member of NORTH now, the administrator of SOUTH is refused with a reason, not a 404.
    refused = world.send("south-admin", "PUT", path, {"roles": ["admin"]})
    assert refused.status_code == 403 and "may not administer" in refused.json()["error"]
    assert world.send("north-admin", "DELETE", path).status_code == 204
    assert world.send("north-admin", "DELETE", path).status_code == 404
    viewer = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/memberships",
        {"email": "nv@north.test", "roles": ["viewer", "receiver"]},
    )
    assert viewer.json()["outcome"] == "added"  # only NORTH's: nobody else's to ask
    assert viewer.json()["membership"]["roles"] == ["receiver", "viewer"]


def test_creating_users(world):
    member = {
        "email": "new@north.test",
        "password": PASSWORD,
        "institution": "NORTH",
        "roles": ["sender"],
    }
    made = world.send("north-admin", "POST", "/users", member)
    assert made.status_code == 201, made.text
    assert made.json()["memberships"][0]["roles"] == ["sender"]
    assert sign_in(world.http, "new@north.test").status_code == 200
    assert world.send("north-admin", "POST", "/users", member).status_code == 409
    system = {"email": "ops@ferry.test", "system_admin": True}
    assert world.send("north-admin", "POST", "/users", system).status_code == 403
    assert world.send("system", "POST", "/users", system).status_code == 201
    foreign = {**member, "email": "x@north.test", "institution": "SOUTH"}
    assert world.send("north-admin", "POST", "/users", foreign).status_code == 404


def test_registration_approved_then_signs_in(world):
    body = {
        "email": "dr.new@north.test",
        "name": "Dr New",
        "password": PASSWORD,
        "institution": "NORTH",
    }
    accepted = world.http.post("/api/registrations", json=body)
    assert accepted.status_code == 202, accepted.text
    again = world.http.post("/api/registrations", json=body)
    assert (again.status_code, again.json()) == (202, accepted.json())  # no account oracle
    assert sign_in(world.http, body["email"]).status_code == 401  # pending
    [pending] = world.get("north-admin", "/registrations").json()
    assert (pending["email"], pending["status"]) == ("dr.new@north.test", "pending")
    assert world.get("south-admin", "/registrations").json() == []
    path = f"/registrations/{pending['pk']}"
    assert (
        world.send("south-admin", "POST", f"{path}/approve", {"roles": ["admin"]}).status_code
        == 404
    )
    approved = world.send(
        "north-admin", "POST", f"{path}/approve", {"roles": ["viewer", "receiver"]}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["confirmation_recorded_at"] is not None
    assert world.send("north-admin", "POST", f"{path}/reject", {}).status_code == 409
    signed_in = sign_in(world.http, body["email"])
    assert signed_in.status_code == 200, signed_in.text
    me = httpx.get(f"{str(world.http.base_url).rstrip('/')}/auth/me", cookies=signed_in.cookies)
    assert me.status_code == 200
    history = world.get(
        "north-admin", "/institutions/NORTH/registrations", params={"status": "all"}
    )
    assert [r["roles"] for r in history.json()] == [["receiver", "viewer"]]


def test_registration_rejected(world):
    body = {
        "email": "stranger@else.test",
        "name": "S",
        "password": PASSWORD,
        "institution": "SOUTH",
    }
    assert world.http.post("/api/registrations", json=body).status_code == 202
    [pending] = world.get("south-admin", "/registrations").json()
    rejected = world.send(
        "south-admin", "POST", f"/registrations/{pending['pk']}/reject", {"note": "who?"}
    )
    assert (rejected.json()["status"], rejected.json()["note"]) == ("rejected", "who?")
    assert sign_in(world.http, body["email"]).status_code == 401
    assert world.get("south-admin", "/registrations").json() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "a@b.test", "name": "A", "password": "short", "institution": "NORTH"}, 422),
        ({"email": "nope", "name": "A", "password": PASSWORD, "institution": "NORTH"}, 422),
        ({"email": "a@b.test", "name": "A", "password": PASSWORD}, 422),
        ({"email": "a\x00@b.test", "name": "A", "password": PASSWORD, "institution": "NORTH"}, 400),
        ({"email": "a@b.test", "name": "A\x00", "password": PASSWORD, "institution": "NORTH"}, 400),
    ],
)
def test_bad_registrations(world, body, status):
    response = world.http.post("/api/registrations", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_api_client_token_is_shown_once_and_revocable(world):
    body = {
        "name": "segmenter",
        "roles": ["receiver"],
        "scopes": ["read", "download"],
        "expires_days": 30,
    }
    created = world.send("north-admin", "POST", "/institutions/NORTH/api-clients", body)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("ferry_")
    secret = token.split("_", 2)[2]
    client_pk = created.json()["client"]["pk"]
    listed = world.get("north-admin", "/institutions/NORTH/api-clients")
    one = world.get("north-admin", f"/api-clients/{client_pk}")
    for response in (listed, one):
        assert response.status_code == 200
        assert secret not in response.text and 'token"' not in response.text
    assert listed.json()[0]["tokens"][0]["scopes"] == ["download", "read"]
    as_client = {"authorization": f"Bearer {token}"}
    assert world.http.get("/auth/me", headers=as_client).status_code == 200
    assert world.get("south-admin", f"/api-clients/{client_pk}").status_code == 404
    assert world.send("south-admin", "DELETE", f"/api-clients/{client_pk}").status_code == 404
    revoked = world.send("north-admin", "DELETE", f"/api-clients/{client_pk}")
    assert revoked.json()["disabled"] is True
    assert all(t["revoked_at"] for t in revoked.json()["tokens"])
    assert world.http.get("/auth/me", headers=as_client).status_code == 401


def test_api_tokens_are_issued_and_revoked_one_by_one(world):
    body = {"name": "tool", "roles": ["viewer"]}
    created = world.send("north-admin", "POST", "/institutions/NORTH/api-clients", body).json()
    path = f"/api-clients/{created['client']['pk']}/tokens"
    second = world.send("north-admin", "POST", path, {"scopes": ["read"]})
    assert second.status_code == 201
    assert world.send("north-admin", "DELETE", f"{path}/{created['token_id']}").status_code == 204
    first = {"authorization": f"Bearer {created['token']}"}
    assert world.http.get("/auth/me", headers=first).status_code == 401
    other = {"authorization": f"Bearer {second.json()['token']}"}
    assert world.http.get("/auth/me", headers=other).status_code == 200
    # An API token never administers, whatever its client's roles.
    assert world.http.get("/api/institutions/NORTH", headers=other).status_code in {403, 404}


def test_nodes_rules_hours_and_holidays(world):
    node = world.send(
        "north-admin",
        "POST",
        "/institutions/NORTH/nodes",
        {"ae_title": "NPACS", "host": "pacs.north", "port": 104},
    )
    assert node.status_code == 201, node.text
    node_pk = node.json()["pk"]
    taken = world.send(
        "south-admin",
        "POST",
        "/institutions/SOUTH/nodes",
        {"ae_title": "NPACS", "host": "h", "port": 1},
    )
    assert taken.status_code == 409
    assert world.get("south-admin", f"/nodes/{node_pk}").status_code == 404
    assert (
        world.send("south-admin", "PATCH", f"/nodes/{node_pk}", {"port": 11112}).status_code == 404
    )
    patched = world.send("north-admin", "PATCH", f"/nodes/{node_pk}", {"port": 11112, "tls": True})
    assert (patched.json()["port"], patched.json()["tls"]) == (11112, True)
    permission = {"subject_kind": "role", "subject": "sender", "can_write": True}
    made = world.send("north-admin", "POST", f"/nodes/{node_pk}/permissions", permission)
    assert made.status_code == 201, made.text
    rule = {
        "node_pk": node_pk,
        "sender": "SOUTH",
        "window": "core",
        "out_of_hours_to_worklist": True,
    }
    created = world.send("north-admin", "POST", "/institutions/NORTH/destination-rules", rule)
    assert created.status_code == 201, created.text
    assert world.get("south-admin", f"/destination-rules/{created.json()['pk']}").status_code == 404
    hours = world.send(
        "north-admin",
        "PUT",
        "/institutions/NORTH/hours",
        {"weekdays": [1, 2, 3, 4], "start": "07:00", "end": "19:30"},
    )
    assert hours.json() == {
        "institution_pk": world.pks["NORTH"],
        "weekdays": [1, 2, 3, 4],
        "start": "07:00",
        "end": "19:30",
        "timezone": "Europe/Paris",
    }
    holiday = {"day": "2026-12-25", "name": "Christmas"}
    assert (
        world.send("north-admin", "POST", "/institutions/NORTH/holidays", holiday).status_code
        == 201
    )
    assert (
        world.send("north-admin", "POST", "/institutions/NORTH/holidays", holiday).status_code
        == 409
    )
    assert world.get("north-admin", "/institutions/NORTH/holidays").json() == [holiday]
    in_use = world.send("north-admin", "DELETE", f"/nodes/{node_pk}")
    assert in_use.status_code == 409
    assert "still names node" in in_use.json()["error"]
    rule_path = f"/destination-rules/{created.json()['pk']}"
    assert world.send("north-admin", "DELETE", rule_path).status_code == 204
    assert world.send("north-admin", "DELETE", f"/nodes/{node_pk}").status_code == 204


def _study(server: RunningServer, owner: int) -> str:
    from pydicom.uid import generate_uid
    from sqlmodel import Session

    uid = generate_uid()
    with Session(server.archive.engine) as session:
        patient = Patient(patient_id="P1")
        session.add(patient)
        session.flush()
        session.add(
            Study(
                patient_pk=patient.pk,
                study_instance_uid=uid,
                institution_pk=owner,
                attrs_json=b"{}",
            )
        )
        session.commit()
    return uid


def test_grants(world):
    uid = _study(world.server, world.pks["NORTH"])
    body = {"study_uid": uid, "institution": "SOUTH", "expires_days": 7, "reason": "second opinion"}
    assert world.send("south-admin", "POST", "/grants", body).status_code == 404  # not theirs
    made = world.send("north-admin", "POST", "/grants", body)
    assert made.status_code == 201, made.text
    assert world.send("north-admin", "POST", "/grants", body).status_code == 409
    held = world.get("south-admin", "/institutions/SOUTH/grants").json()
    assert [(g["study_uid"], g["revoked_at"]) for g in held] == [(uid, None)]
    assert held[0]["actions"] == ["search", "read-metadata", "read-pixels", "download"]
    deleting = {**body, "actions": ["search", "delete"]}  # a grant never gives delete
    assert world.send("north-admin", "POST", "/grants", deleting).status_code == 422
    grant_pk = made.json()["pk"]
    assert world.send("south-admin", "DELETE", f"/grants/{grant_pk}").status_code == 404
    revoked = world.send("north-admin", "DELETE", f"/grants/{grant_pk}")
    assert revoked.json()["revoked_at"] is not None
    unknown = {**body, "study_uid": "1.2.3.4"}
    assert world.send("north-admin", "POST", "/grants", unknown).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/institutions", {"code": "has space", "name": "x"}, 422),
        ("POST", "/institutions", {"code": "OK", "name": "x", "timezone": "Mars/Base"}, 400),
        ("POST", "/institutions", {"code": "OK", "name": "x", "colour": "red"}, 422),
        ("POST", "/institutions", {"code": "OK", "name": "x\x00y"}, 400),
        ("POST", "/institutions", ["not", "an", "object"], 422),
        ("POST", "/institutions", {"code": "NORTH", "name": "dup"}, 409),
        ("PATCH", "/institutions/NORTH", {"name": ""}, 422),
        ("GET", "/institutions/%00", None, 404),
        ("GET", "/users/99999999999999999999", None, 404),
        ("GET", "/users/-1", None, 404),
        ("GET", "/users/abc", None, 404),
        ("POST", "/institutions/NORTH/nodes", {"ae_title": "A\\B", "host": "h", "port": 104}, 400),
        ("POST", "/institutions/NORTH/nodes", {"ae_title": "A", "host": "h", "port": 70000}, 422),
        (
            "PUT",
            "/institutions/NORTH/hours",
            {"weekdays": [9], "start": "08:00", "end": "18:00"},
            422,
        ),
        (
            "PUT",
            "/institutions/NORTH/hours",
            {"weekdays": [1], "start": "08:00", "end": "08:00"},
            400,
        ),
        (
            "PUT",
            "/institutions/NORTH/hours",
            {"weekdays": [1], "start": "8am", "end": "18:00"},
            422,
        ),
        ("POST", "/institutions/NORTH/holidays", {"day": "2026-02-30"}, 422),
        ("DELETE", "/institutions/NORTH/holidays/not-a-day", None, 404),
        ("POST", "/institutions/NORTH/destination-rules", {"sender": "NOBODY"}, 400),
        ("POST", "/institutions/NORTH/destination-rules", {"node_pk": 4242}, 404),
        (
            "POST",
            "/institutions/NORTH/destination-rules",
            {"window": "always", "out_of_hours_to_worklist": True},
            400,
        ),
        ("POST", "/institutions/NORTH/api-clients", {"name": "x", "roles": ["wizard"]}, 422),
        ("POST", "/institutions/NORTH/api-clients", {"name": "x", "roles": []}, 422),
        (
            "POST",
            "/institutions/NORTH/api-clients",
            {"name": "x", "roles": ["viewer"], "expires_days": 0},
            422,
        ),
        ("POST", "/grants", {"study_uid": "not a uid", "institution": "SOUTH"}, 422),
        ("POST", "/users", {"email": "a\x00@b.t", "system_admin": True}, 400),
        ("GET", "/registrations", {"status": "maybe"}, 422),
        ("POST", "/registrations/1/approve", {"roles": []}, 422),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(world, method, path, body, status):
    if method == "GET":
        response = world.get("system", path, params=body)
    else:
        response = world.send("system", method, path, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_bodies_that_are_not_json(world):
    url, auth = "/api/institutions", world.as_("system")
    broken = world.http.post(
        url, headers={**auth, "content-type": "application/json"}, content=b"{"
    )
    assert broken.status_code == 422
    form = world.http.post(url, headers=auth, data={"code": "X", "name": "X"})
    assert form.status_code == 415
    huge = world.http.post(url, headers=auth, json={"code": "X", "name": "x" * 100_000})
    assert huge.status_code == 413


def test_credentials_are_required(world):
    assert world.http.get("/api/institutions").status_code == 401
    bad = world.http.get("/api/institutions", headers={"authorization": "Bearer nonsense"})
    assert bad.status_code == 401
    assert world.http.get("/api/openapi.json").status_code == 200


def test_explain_gives_the_rule_chain_to_the_study_administrators_only(world):
    uid = _study(world.server, world.pks["NORTH"])
    query = {"user": "nv@north.test", "study": uid, "action": "download"}
    answer = world.get("north-admin", "/explain", params=query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["allowed"], body["rule"]) == (False, "default-deny")
    assert body["chain"] == ["principal-active", "owner-membership", "active-grant", "default-deny"]
    viewing = world.get("north-admin", "/explain", params={**query, "action": "search"}).json()
    assert (viewing["allowed"], viewing["rule"]) == (True, "owner-membership")
    assert world.get("south-admin", "/explain", params=query).status_code == 404
    assert world.get("system", "/explain", params=query).status_code == 200
    assert (
        world.get("north-admin", "/explain", params={**query, "study": "1.2.3"}).status_code == 404
    )
    for bad in ({**query, "action": "fly"}, {**query, "study": "../etc"}, {"user": "x"}):
        assert world.get("north-admin", "/explain", params=bad).status_code == 422
