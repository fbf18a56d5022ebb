"""Nodes' DIMSE rights, direct-push routes, jobs and transfers over the admin API, real server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlmodel import Session, select

from audit.models import AuditEvent
from exchange.models import Transfer
from foundation.jobs import JobQueue
from policy import store
from policy.store.destinations import create_route
from tests._peers import start_scp
from tests.conftest import RunningServer, free_port, issue_token_for
from tests.policy._people import add_api_token


@dataclass
class World:
    http: httpx.Client
    server: RunningServer
    tokens: dict[str, str]
    pks: dict[str, int]

    def call(self, who: str, method: str, path: str, body: object = None, **kw) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens[who]}"}
        return self.http.request(method, f"/api{path}", headers=headers, json=body, **kw)

    def refusals(self, path: str) -> list[AuditEvent]:
        """Denied administration audited for this request path."""
        with Session(self.server.archive.engine) as session:
            denied = session.exec(select(AuditEvent).where(AuditEvent.outcome == "denied"))
            return [event for event in denied if f'"/api{path}"' in event.detail]


@pytest.fixture
def world(server: RunningServer):
    """NORTH and SOUTH with an administrator each, a viewer of NORTH, a system administrator."""
    engine = server.archive.engine
    north = store.create_institution(engine, "NORTH", "North Hospital")
    south = store.create_institution(engine, "SOUTH", "South Clinic")
    people = {
        "system": ("root@ferry.test", None),
        "north-admin": ("na@north.test", {north.pk: "admin"}),
        "south-admin": ("sa@south.test", {south.pk: "admin"}),
        "north-viewer": ("nv@north.test", {north.pk: "viewer"}),
    }
    pks = {"NORTH": north.pk, "SOUTH": south.pk}
    tokens = {}
    for who, (email, memberships) in people.items():
        user = store.create_user(engine, email, system_admin=memberships is None)
        for institution_pk, roles in (memberships or {}).items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        tokens[who] = issue_token_for(server.app, server.archive, user.pk)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield World(http, server, tokens, pks)


def created(response: httpx.Response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def test_nodes_carry_their_dimse_rights(world):
    ris = created(
        world.call(
            "north-admin",
            "POST",
            "/institutions/NORTH/nodes",
            {"ae_title": "NORTH_RIS", "host": "ris.north", "port": 104, "worklist": True},
        )
    )
    body = {
        "ae_title": "NORTH_PACS",
        "host": "pacs.north",
        "port": 11112,
        "can_query": True,
        "can_write": True,
        "move_destination": True,
        "retrieve_method": "get",
        "reconcile_with_pk": ris["pk"],
    }
    pacs = created(world.call("north-admin", "POST", "/institutions/NORTH/nodes", body))
    shown = world.call("north-admin", "GET", f"/nodes/{pacs['pk']}").json()
    assert {key: shown[key] for key in body} == body
    assert (shown["worklist"], shown["tls"], ris["worklist"]) == (False, False, True)
    assert shown["any_address"] is False  # associations only from its host, by default
    natted = world.call("north-admin", "PATCH", f"/nodes/{pacs['pk']}", {"any_address": True})
    assert natted.json()["any_address"] is True
    world.call("north-admin", "PATCH", f"/nodes/{pacs['pk']}", {"any_address": False})
    changes = {"can_query": False, "retrieve_method": "move", "reconcile_with_pk": None}
    patched = world.call("north-admin", "PATCH", f"/nodes/{pacs['pk']}", changes).json()
    assert {key: patched[key] for key in changes} == changes
    assert patched["can_write"] and patched["move_destination"]  # untouched
    again = {"reconcile_with_pk": ris["pk"]}
    assert world.call("north-admin", "PATCH", f"/nodes/{pacs['pk']}", again).status_code == 200
    in_use = world.call("north-admin", "PATCH", f"/nodes/{ris['pk']}", {"worklist": False})
    assert in_use.status_code == 400 and "NORTH_PACS reconciles with it" in in_use.json()["error"]
    removed = world.call("north-admin", "DELETE", f"/nodes/{ris['pk']}")
    assert removed.status_code == 409 and "still reconciles" in removed.json()["error"]
    south = created(
        world.call(
            "south-admin",
            "POST",
            "/institutions/SOUTH/nodes",
            {"ae_title": "SOUTH_RIS", "host": "ris.south", "port": 104, "worklist": True},
        )
    )
    for elsewhere in (south["pk"], ris["pk"], 4242):  # another institution's, itself, none
        refused = world.call(
            "north-admin", "PATCH", f"/nodes/{ris['pk']}", {"reconcile_with_pk": elsewhere}
        )
        assert refused.status_code == 404, refused.text
    plain = {"ae_title": "NORTH_CT", "host": "ct.north", "port": 104}
    ct = created(world.call("north-admin", "POST", "/institutions/NORTH/nodes", plain))
    not_ris = world.call(
        "north-admin", "PATCH", f"/nodes/{pacs['pk']}", {"reconcile_with_pk": ct["pk"]}
    )
    assert not_ris.status_code == 400 and "worklist is off" in not_ris.json()["error"]
    fetch = world.call(
        "north-admin", "POST", "/institutions/NORTH/nodes", {**plain, "retrieve_method": "fetch"}
    )
    assert fetch.status_code == 422
    assert world.call("south-admin", "PATCH", f"/nodes/{pacs['pk']}", changes).status_code == 404
    assert world.refusals(f"/nodes/{pacs['pk']}")


def test_routes_belong_to_the_destination_administrators(world):
    node = created(
        world.call(
            "north-admin",
            "POST",
            "/institutions/NORTH/nodes",
            {"ae_title": "NORTH_PACS", "host": "pacs.north", "port": 104, "can_write": True},
        )
    )
    body = {
        "called_ae_title": "FERRY_TO_NORTH",
        "destination": "NORTH",
        "destination_node_pk": node["pk"],
        "quiet_seconds": 120,
        "accept_unknown_callers": True,
        "description": "night reads",
    }
    route = created(world.call("north-admin", "POST", "/routes", body))
    expected = {**body, "destination_institution_pk": world.pks["NORTH"], "pk": route["pk"]}
    assert route == expected
    path = f"/routes/{route['pk']}"
    assert world.call("north-admin", "GET", path).json() == route
    assert world.call("north-admin", "GET", "/routes").json() == [route]
    assert world.call("system", "GET", "/routes").json() == [route]
    assert world.call("south-admin", "GET", "/routes").json() == []
    assert world.call("south-admin", "GET", path).status_code == 404
    assert world.call("south-admin", "DELETE", path).status_code == 404
    viewer = world.call("north-viewer", "GET", path)
    assert viewer.status_code == 403 and "may not administer" in viewer.json()["error"]
    assert len(world.refusals(path)) == 3
    worklist = {"called_ae_title": "TO_SOUTH", "destination": "SOUTH"}
    not_south = world.call(
        "system", "POST", "/routes", {**worklist, "destination_node_pk": node["pk"]}
    )
    assert not_south.status_code == 404 and "has no node" in not_south.json()["error"]
    assert world.call("north-admin", "POST", "/routes", worklist).status_code == 404
    to_south = created(world.call("south-admin", "POST", "/routes", worklist))
    assert (to_south["destination_node_pk"], to_south["quiet_seconds"]) == (None, 30)
    assert {r["called_ae_title"] for r in world.call("system", "GET", "/routes").json()} == {
        "FERRY_TO_NORTH",
        "TO_SOUTH",
    }
    in_use = world.call("north-admin", "DELETE", f"/nodes/{node['pk']}")
    assert in_use.status_code == 409 and "FERRY_TO_NORTH" in in_use.json()["error"]
    assert world.call("north-admin", "DELETE", path).status_code == 204
    assert world.call("north-admin", "GET", path).status_code == 404
    assert world.call("north-admin", "DELETE", f"/nodes/{node['pk']}").status_code == 204


BAD_ROUTES = [
    ({"called_ae_title": "FERRY", "destination": "NORTH"}, 400, "Ferry's own AE title"),
    ({"called_ae_title": "A\\B", "destination": "NORTH"}, 400, "AE title"),
    ({"called_ae_title": "X" * 17, "destination": "NORTH"}, 422, "called_ae_title"),
    ({"called_ae_title": "TO_X", "destination": "NOWHERE"}, 404, "no institution 'NOWHERE'"),
    ({"called_ae_title": "TO_X", "destination": "NORTH", "destination_node_pk": 4242}, 404,
     "has no node 4242"),
    ({"called_ae_title": "TO_X", "destination": "NORTH", "quiet_seconds": 0}, 422,
     "quiet_seconds"),
    ({"called_ae_title": "TO_X", "destination": "NORTH", "quiet_seconds": 86401}, 422,
     "quiet_seconds"),
    ({"called_ae_title": "TAKEN", "destination": "NORTH"}, 409, "is taken"),
    ({"called_ae_title": "TO_X", "destination": "NORTH", "colour": "red"}, 422, "colour"),
]  # fmt: skip


def test_bad_routes_are_refused_with_a_reason(world):
    create_route(world.server.archive.engine, "TAKEN", world.pks["NORTH"])
    for body, status, says in BAD_ROUTES:
        response = world.call("system", "POST", "/routes", body)
        assert response.status_code == status, (body, response.text)
        assert says in response.json()["error"], body
    assert [r["called_ae_title"] for r in world.call("system", "GET", "/routes").json()] == [
        "TAKEN"
    ]


def test_every_job_is_for_system_administrators(world):
    queue = JobQueue(world.server.archive.engine)
    waiting = queue.add("forward-study", {"transfer_pk": 1, "node_pk": 2})
    queue.add("notify", {"to": "x"}, max_attempts=1)
    claimed = queue.claim(frozenset({"notify"}))
    queue.fail(claimed, "the node refused the association: called AE not recognised")
    # An institution's administrator sees only its transfers' and requests' jobs: none here.
    assert world.call("north-admin", "GET", "/jobs").json() == []
    assert world.call("north-viewer", "GET", "/jobs").status_code == 403
    for who in ("north-admin", "north-viewer"):  # a job one may not see is not there
        assert world.call(who, "POST", f"/jobs/{claimed.pk}/retry", {}).status_code == 404
    assert len(world.refusals("/jobs")) == 1
    assert len(world.refusals(f"/jobs/{claimed.pk}/retry")) == 2
    everything = world.call("system", "GET", "/jobs").json()
    assert [job["pk"] for job in everything] == [claimed.pk, waiting]
    [parked] = world.call("system", "GET", "/jobs", params={"status": "parked"}).json()
    assert (parked["kind"], parked["attempts"], parked["payload"]) == ("notify", 1, {"to": "x"})
    assert "called AE not recognised" in parked["last_error"]
    kind = world.call("system", "GET", "/jobs", params={"kind": "forward-study"}).json()
    assert [job["pk"] for job in kind] == [waiting]
    retried = world.call("system", "POST", f"/jobs/{claimed.pk}/retry", {})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("queued", 0)
    again = world.call("system", "POST", f"/jobs/{claimed.pk}/retry", {})
    assert again.status_code == 409 and "only parked jobs" in again.json()["error"]
    claimed = queue.claim(frozenset({"notify"}))
    queue.fail(claimed, "no worklist match", permanent=True)
    as_sent = world.call("system", "POST", f"/jobs/{claimed.pk}/retry", {"as_sent": True})
    assert as_sent.status_code == 200 and as_sent.json()["payload"]["as_sent"] is True
    assert world.call("system", "POST", "/jobs/999999/retry", {}).status_code == 404
    bad = (
        {"status": "lost"},
        {"status": ""},
        {"kind": "x\x00y"},
        {"limit": "0"},
        {"colour": "red"},
    )
    for params in bad:
        assert world.call("system", "GET", "/jobs", params=params).status_code == 422


def test_transfers_are_shown_to_the_sender_and_destination_administrators(world):
    engine = world.server.archive.engine
    east = store.create_institution(engine, "EAST", "East").pk
    north, south = world.pks["NORTH"], world.pks["SOUTH"]
    now = datetime.now(UTC)
    with Session(engine) as session:
        for sender, destination, status in (
            (north, south, "delivered"),
            (south, east, "failed"),
            (east, north, "collecting"),
        ):
            session.add(
                Transfer(
                    study_instance_uid=f"1.2.{sender}.{destination}",
                    sender_institution_pk=sender,
                    destination_institution_pk=destination,
                    status=status,
                    instances=3,
                    created_at=now - timedelta(minutes=5),
                    last_instance_at=now,
                )
            )
        session.commit()

    def seen(who: str, **params: str) -> list[tuple[str, str]]:
        response = world.call(who, "GET", "/oversight/transfers", params=params)
        assert response.status_code == 200, response.text
        return [(t["sender"], t["destination"]) for t in response.json()]

    assert seen("north-admin") == [("EAST", "NORTH"), ("NORTH", "SOUTH")]
    assert seen("south-admin", institution="SOUTH") == [("SOUTH", "EAST"), ("NORTH", "SOUTH")]
    assert seen("system") == [("EAST", "NORTH"), ("SOUTH", "EAST"), ("NORTH", "SOUTH")]
    assert seen("system", status="failed") == [("SOUTH", "EAST")]
    assert seen("north-admin", status="failed") == []
    assert seen("north-viewer") == []  # administers nothing
    [one] = world.call(
        "north-admin", "GET", "/oversight/transfers", params={"status": "delivered"}
    ).json()
    assert one["instances"] == 3 and one["last_instance_at"].endswith(("Z", "+00:00"))
    foreign = world.call(
        "north-admin", "GET", "/oversight/transfers", params={"institution": "SOUTH"}
    )
    viewer = world.call(
        "north-viewer", "GET", "/oversight/transfers", params={"institution": "NORTH"}
    )
    assert (foreign.status_code, viewer.status_code) == (404, 403)
    assert len(world.refusals("/oversight/transfers")) == 2
    bad = world.call("system", "GET", "/oversight/transfers", params={"status": "lost"})
    assert bad.status_code == 422


def test_the_openapi_document_names_the_new_operations(world):
    document = world.http.get("/api/openapi.json").json()
    assert {"/api/routes", "/api/routes/{route_pk}", "/api/jobs", "/api/transfers"} <= set(
        document["paths"]
    )
    assert "post" in document["paths"]["/api/jobs/{job_pk}/retry"]
    schemas = document["components"]["schemas"]
    assert schemas["RouteIn"]["properties"]["quiet_seconds"]["maximum"] == 86400
    assert schemas["NodeIn"]["properties"]["retrieve_method"]["enum"] == ["move", "get"]


def _verification_scp(status: int) -> tuple[Any, int]:
    """A pynetdicom SCP that answers C-ECHO with `status`; (its AE, its port)."""
    ae = AE(ae_title="ECHO_SCP")
    ae.add_supported_context(Verification)
    port = free_port()
    start_scp(ae, port, [(evt.EVT_C_ECHO, lambda _event: status)])
    return ae, port


def test_an_administrator_checks_that_a_node_answers_by_c_echo(world):
    answering, answering_port = _verification_scp(0x0000)
    failing, failing_port = _verification_scp(0xC000)
    try:
        nodes = {
            ae: created(world.call("north-admin", "POST", "/institutions/NORTH/nodes",
                                   {"ae_title": ae, "host": "127.0.0.1", "port": port}))["pk"]
            for ae, port in (("NORTH_PACS", answering_port), ("NORTH_BUSY", failing_port),
                             ("NORTH_GONE", free_port()))
        }  # fmt: skip
        echoed = world.call("north-admin", "POST", f"/nodes/{nodes['NORTH_PACS']}/echo", {})
        assert echoed.status_code == 200, echoed.text
        answer = echoed.json()
        assert (answer["ae_title"], answer["port"], answer["status"]) == (
            "NORTH_PACS", answering_port, "0x0000",
        )  # fmt: skip
        assert answer["milliseconds"] > 0
        busy = world.call("north-admin", "POST", f"/nodes/{nodes['NORTH_BUSY']}/echo", {})
        assert busy.status_code == 502
        assert busy.json()["error"] == (
            "NORTH_BUSY answered the C-ECHO with status 0xC000: the node was unable to process"
            " the request"
        )
        gone = world.call("north-admin", "POST", f"/nodes/{nodes['NORTH_GONE']}/echo", {})
        assert gone.status_code == 502
        assert gone.json()["error"].startswith("NORTH_GONE at 127.0.0.1:")
        path = f"/nodes/{nodes['NORTH_PACS']}/echo"
        assert world.call("system", "POST", path, {}).status_code == 200
        stranger = world.call("south-admin", "POST", path, {})
        missing = world.call("south-admin", "POST", "/nodes/999999/echo", {})
        assert stranger.status_code == missing.status_code == 404  # exactly like a missing one
        assert stranger.json()["error"] == f"no node {nodes['NORTH_PACS']}"
        assert world.call("north-viewer", "POST", path, {}).status_code == 403
        read_only, _, _ = add_api_token(world.server.archive.engine, world.pks["NORTH"],
                                        roles="admin", scopes="read")  # fmt: skip
        refused = world.http.post(
            f"/api{path}", headers={"authorization": f"Bearer {read_only}"}, json={}
        )
        assert refused.status_code == 403
        assert len(world.refusals(path)) >= 3  # audited
        assert world.call("north-admin", "GET", f"/nodes/{nodes['NORTH_PACS']}").status_code == 200
    finally:
        answering.shutdown()
        failing.shutdown()
