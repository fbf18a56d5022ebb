"""The retention API: periods and holds, each refused to everyone who must not pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archive.importer import import_paths
from audit.search import AuditQuery, iter_events
from exchange.grants import grant_study
from policy import store
from tests.conftest import issue_token_for
from tests.factories import StudySpec, write_series

FUTURE = (datetime.now(UTC) + timedelta(days=90)).date().isoformat()


def _study(world, tmp_path: Path, code: str, patient_id: str = "P-1") -> str:
    spec = StudySpec(patient_id=patient_id)
    write_series(tmp_path / spec.study_uid, 1, spec=spec)
    archive = world.server.archive
    import_paths(archive, [tmp_path / spec.study_uid], progress=False,
                 institution_pk=world.pks[code])  # fmt: skip
    return spec.study_uid


def _client_token(world, roles: list[str], scopes: list[str]) -> str:
    body = {"name": f"tool-{'-'.join(scopes)}", "roles": roles, "scopes": scopes}
    created = world.send("north-admin", "POST", "/institutions/NORTH/api-clients", body)
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


@pytest.fixture
def refused(world):
    """Everyone who must not change NORTH's retention, and the status each gets."""
    engine = world.server.archive.engine
    requester = store.create_user(engine, "nr@north.test")
    store.set_membership(engine, requester.pk, world.pks["NORTH"], "requester")
    world.tokens["north-requester"] = issue_token_for(world.server.app, world.server.archive,
                                                      requester.pk)  # fmt: skip
    world.tokens["read-token"] = _client_token(world, ["admin"], ["read", "download"])
    return {
        "south-admin": 404,  # another institution's administrator: as if NORTH did not exist
        "north-viewer": 403,  # a member without the role
        "north-requester": 403,  # a request-only user
        "read-token": 403,  # a read-only token of an administrator client
    }


def test_an_administrator_reads_and_sets_the_periods(world) -> None:
    shown = world.get("north-admin", "/institutions/NORTH/retention")
    assert shown.status_code == 200, shown.text
    assert shown.json() | {"updated_at": None} == {
        "institution": "NORTH", "worklist_days": 15, "node_days": 15, "upload_days": 15,
        "warn_days": 2, "own": [], "default_days": 15, "ceiling_days": 3650,
        "updated_at": None, "updated_by": "",
    }  # fmt: skip
    changed = world.send("north-admin", "PUT", "/institutions/NORTH/retention",
                         {"worklist_days": 30, "warn_days": 5})  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["worklist_days"] == 30 and changed.json()["own"] == [
        "worklist_days",
        "warn_days",
    ]
    back = world.send("north-admin", "PUT", "/institutions/NORTH/retention",
                      {"worklist_days": None})  # fmt: skip
    assert back.json()["worklist_days"] == 15 and back.json()["own"] == ["warn_days"]
    events = list(iter_events(world.server.archive.engine, AuditQuery(action="retention-policy")))
    assert [e.actor for e in events] == ["user:na@north.test"] * 2
    assert world.get("system", "/institutions/SOUTH/retention").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"worklist_days": -1}, 422, "greater than or equal to 1"),
        ({"node_days": 0}, 422, "greater than or equal to 1"),
        ({"warn_days": -2}, 422, "greater than or equal to 0"),
        ({"upload_days": 5000}, 400, "3650 days (the system's ceiling)"),
        ({"upload_days": "30"}, 422, "valid integer"),
        ({"forever": True}, 422, "Extra inputs"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(world, body, status, says) -> None:
    answer = world.send("north-admin", "PUT", "/institutions/NORTH/retention", body)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert world.get("north-admin", "/institutions/NORTH/retention").json()["own"] == []
    unknown = world.send("north-admin", "PUT", "/institutions/NOWHERE/retention", {})
    assert unknown.status_code == 404


def test_the_periods_are_refused_to_everyone_else(world, refused) -> None:
    for who, status in {**refused, "south-admin": 404}.items():
        assert world.get(who, "/institutions/NORTH/retention").status_code == status, who
        put = world.send(who, "PUT", "/institutions/NORTH/retention", {"worklist_days": 99})
        assert put.status_code == status, who
    beyond = world.send("north-admin", "PUT", "/institutions/SOUTH/retention", {"node_days": 1})
    assert beyond.status_code == 404  # an institution administrator reaching beyond its own
    assert world.get("north-admin", "/institutions/NORTH/retention").json()["own"] == []
    assert world.get("system", "/institutions/SOUTH/retention").json()["own"] == []


def test_holds_on_what_the_institution_holds(world, tmp_path) -> None:
    own = _study(world, tmp_path, "NORTH")
    received = _study(world, tmp_path, "SOUTH", "S-1")
    grant_study(world.server.archive.engine, received, world.pks["NORTH"])
    foreign = _study(world, tmp_path, "SOUTH", "S-2")
    path = "/institutions/NORTH/holds"
    body = {"reason": "litigation 2026-17", "until": FUTURE}
    made = world.send("north-admin", "POST", path, body | {"study_uid": own})
    assert made.status_code == 201, made.text
    assert made.json()["live"] and made.json()["until"].startswith(FUTURE)
    assert (
        world.send("north-admin", "POST", path, body | {"study_uid": received}).status_code == 201
    )
    hidden = world.send("north-admin", "POST", path, body | {"study_uid": foreign})
    missing = world.send("north-admin", "POST", path, body | {"study_uid": "1.2.3.4"})
    assert hidden.status_code == missing.status_code == 404  # invisible answers like missing
    assert hidden.json()["error"].replace(foreign, "X") == missing.json()["error"].replace(
        "1.2.3.4", "X"
    )
    patient = world.send("north-admin", "POST", path, body | {"patient_id": "P-1"})
    assert patient.status_code == 201, patient.text
    listed = world.get("north-admin", path).json()
    assert len(listed) == 3
    pk = made.json()["pk"]
    released = world.send("north-admin", "POST", f"{path}/{pk}/release", {})
    assert released.status_code == 200 and not released.json()["live"]
    assert world.send("north-admin", "POST", f"{path}/{pk}/release", {}).json()["released_at"]
    assert len(world.get("north-admin", path).json()) == 2
    assert len(world.get("north-admin", path, params={"all": "true"}).json()) == 3
    engine = world.server.archive.engine
    placed = list(iter_events(engine, AuditQuery(action="retention-hold")))
    assert [e.study_uid for e in placed] == [own, received, ""]
    assert placed[2].patient_id == "P-1" and placed[0].reason == "litigation 2026-17"
    assert len(list(iter_events(engine, AuditQuery(action="retention-release")))) == 1
    south_hold = world.send("south-admin", "POST", "/institutions/SOUTH/holds",
                            body | {"study_uid": foreign}).json()["pk"]  # fmt: skip
    stolen = world.send("north-admin", "POST", f"{path}/{south_hold}/release", {})
    assert stolen.status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"until": "2001-01-01"}, 400, "in the future"),
        ({"reason": "x" * 5000}, 422, "at most 1024"),
        ({"reason": ""}, 422, "at least 1"),
        ({"study_uid": None}, 400, "either a study or a patient"),
        ({"patient_id": "P-1"}, 400, "either a study or a patient"),
        ({"study_uid": "not a uid"}, 422, "pattern"),
        ({"until": "next week"}, 422, "until"),
        ({"reason": "ok\x00"}, 400, "printable"),
    ],
)
def test_bad_holds_are_refused_with_a_reason(world, tmp_path, change, status, says) -> None:
    own = _study(world, tmp_path, "NORTH")
    body = {"reason": "audit", "until": FUTURE, "study_uid": own} | change
    answer = world.send("north-admin", "POST", "/institutions/NORTH/holds", body)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert world.get("north-admin", "/institutions/NORTH/holds").json() == []


def test_holds_are_refused_to_everyone_else(world, refused, tmp_path) -> None:
    own = _study(world, tmp_path, "NORTH")
    body = {"reason": "r", "until": FUTURE, "study_uid": own}
    for who, status in refused.items():
        assert world.get(who, "/institutions/NORTH/holds").status_code == status, who
        answer = world.send(who, "POST", "/institutions/NORTH/holds", body)
        assert answer.status_code == status, who
    beyond = world.send("north-admin", "POST", "/institutions/SOUTH/holds", body)
    assert beyond.status_code == 404
    card = world.send("north-admin", "POST", "/institutions/NORTH-CARD/holds",
                      body | {"study_uid": None, "patient_id": "P-1"})  # fmt: skip
    assert card.status_code == 403  # a parent's administrator is no member of it
    assert world.send("system", "POST", "/institutions/NORTH/holds", body).status_code == 404
    assert world.get("north-admin", "/institutions/NORTH/holds").json() == []
    denied = list(iter_events(world.server.archive.engine, AuditQuery(outcome="denied")))
    assert any(e.action == "hold" for e in denied)


def test_a_legal_hold_tool_holds_with_its_own_scope(world, tmp_path) -> None:
    own = _study(world, tmp_path, "NORTH")
    world.tokens["hold-tool"] = _client_token(world, ["admin"], ["hold"])
    body = {"reason": "court order 5", "until": FUTURE, "study_uid": own}
    made = world.send("hold-tool", "POST", "/institutions/NORTH/holds", body)
    assert made.status_code == 201, made.text
    assert made.json()["created_by"].startswith("api-client:")
    periods = world.send("hold-tool", "PUT", "/institutions/NORTH/retention", {"node_days": 1})
    assert periods.status_code == 403  # holding is not administering


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_in_retention(server, tmp_path) -> None:
    """The retention operations alone, generated inputs valid and invalid (the whole API's run
    is `test_openapi.py`)."""
    from tests.portal.test_openapi import schemathesis, system_admin_token

    token = system_admin_token(server)
    schemathesis(server, token, tmp_path, "--include-tag", "retention")
