"""Oversight searched by patient: `POST /api/oversight/{transactions,audit}/search`, the criteria
in a JSON body, so that a Patient ID or accession number never lands in a URL (access logs,
proxies); the GET forms keep every other filter and refuse the patient ones."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_user
from tests.portal._oversight_world import World, opened_world

TRANSACTIONS, AUDIT = "/oversight/transactions", "/oversight/audit"
BOTH = pytest.mark.parametrize("path", [TRANSACTIONS, AUDIT])


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    yield from opened_world(server, tmp_path)


def _readings(world: World) -> list[Any]:
    return [e for e in world.audit(action="audit", outcome="allowed") if e.actor_kind != "cli"]


def _found(path: str, answer: dict[str, Any]) -> list[Any]:
    if path == TRANSACTIONS:
        return [item["id"] for item in answer["items"]]
    return [(e["pk"], e["action"]) for e in answer["events"] if e["action"] != "audit"]


@BOTH
def test_a_search_answers_as_the_get_does(world: World, path: str) -> None:
    criteria = {"institution": "A", "from": "2026-06-10", "to": "2026-06-12"}
    if path == AUDIT:
        criteria = {"institution": "A", "transaction": world.ids["t1"]}
    got = world.get("a-admin", path, params=criteria)
    posted = world.search("a-admin", path, criteria)
    assert got.status_code == posted.status_code == 200, posted.text
    assert _found(path, posted.json()) == _found(path, got.json()) != []


def test_transactions_are_found_by_patient_and_accession_in_the_body(world: World) -> None:
    w = world.ids
    by_patient = world.search("a-auditor", TRANSACTIONS, {"institution": "A",
                                                          "patient_id": "PAT-1"})  # fmt: skip
    assert _found(TRANSACTIONS, by_patient.json()) == [w["failed"], w["t1"]]
    paged = world.search("a-auditor", TRANSACTIONS, {
        "institution": "A", "accession": "ACC-PAT-2", "sort": "created", "order": "asc",
        "offset": 1, "limit": 1,
    })  # fmt: skip
    assert paged.json()["total"] == 2 and _found(TRANSACTIONS, paged.json()) == [w["t2"]]
    [reading] = [e for e in _readings(world) if e.accession_number == "ACC-PAT-2"]
    assert reading.institution_pk == world.pks["A"] and '"view":"transactions"' in reading.detail
    assert "/api/oversight/transactions/search" in reading.detail


def test_the_trail_is_found_by_patient_in_the_body(world: World) -> None:
    answer = world.search("a-auditor", AUDIT, {"institution": "A", "patient_id": "PAT-2"})
    events = answer.json()["events"]
    assert events and {e["patient_id"] for e in events} == {"PAT-2"}
    readings = [e for e in _readings(world) if e.patient_id == "PAT-2"]
    assert len(readings) == 1 and '"view":"audit trail"' in readings[0].detail


@BOTH
def test_csv_of_a_search_by_format_or_accept(world: World, path: str) -> None:
    criteria = {"institution": "A", "patient_id": "PAT-1"}
    by_format = world.search("a-auditor", path, {**criteria, "format": "csv"})
    by_accept = world.search("a-auditor", path, criteria, headers={"accept": "text/csv"})
    for answer in (by_format, by_accept):
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "PAT-1" not in answer.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert rows and {row["patient_id"] for row in rows} == {"PAT-1"}


@BOTH
def test_a_patient_filter_in_a_url_is_refused_and_nothing_is_read(world: World, path: str) -> None:
    for name, value in (("patient_id", "PAT-1"), ("accession", "ACC-PAT-1")):
        refused = world.get("a-admin", path, params={"institution": "A", name: value})
        assert refused.status_code == 422, refused.text
        assert f"POST them to /api{path}/search" in refused.json()["error"]
        assert value not in refused.text
    assert _readings(world) == []
    assert world.get("a-admin", path, params={"institution": "A"}).status_code == 200


@BOTH
def test_who_may_search(world: World, path: str) -> None:
    body = {"institution": "A", "patient_id": "PAT-1"}
    for who in ("a-admin", "a-auditor", "system", "a-audit-token"):
        assert world.search(who, path, body).status_code == 200, who
    for who in ("c-admin", "c-auditor", "b-admin", "b-user", "sec-auditor"):
        foreign = world.search(who, path, body)
        assert foreign.status_code == 404, who
        assert foreign.json() == {"error": "no institution 'A'", "status": 404}
    for who in ("a-user", "a-requester", "a-read-token"):  # request-only, read-only token
        refused = world.search(who, path, body)
        assert refused.status_code == 403 and "may not audit" in refused.json()["error"], who
    beyond = {**body, "institution": "A-SEC"}  # A's security institution: not its business
    assert world.search("a-admin", path, beyond).status_code == 403
    assert world.search("a-admin", path, {**body, "institution": "C"}).status_code == 404
    assert world.search("a-admin", path, {**body, "institution": "NOWHERE"}).status_code == 404
    anonymous = world.http.post(f"/api{path}/search", json=body)
    assert anonymous.status_code == 401
    denied = [
        e for e in world.audit(action="audit", outcome="denied") if f"{path}/search" in e.detail
    ]
    assert len(denied) >= 10  # all but the institution that does not exist
    readers = {e.actor for e in _readings(world) if e.patient_id == "PAT-1"}
    assert len(readers) == 4  # only those allowed read anything


@BOTH
def test_a_session_cookie_searches_with_its_csrf_token(world: World, path: str) -> None:
    engine = world.server.archive.engine
    add_user(engine, "a-session@ferry.test", memberships={world.pks["A"]: "auditor"})
    who = {"email": "a-session@ferry.test", "password": PASSWORD}
    signed_in = httpx.post(f"{world.server.base_url}/auth/login", json=who, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    cookie = {"cookie": f"ferry_session={signed_in.cookies['ferry_session']}"}
    body = {"institution": "A", "patient_id": "PAT-1"}
    forged = world.http.post(f"/api{path}/search", json=body, headers=cookie)
    assert forged.status_code == 401 and "x-csrf-token" in forged.json()["error"]
    csrf = {"x-csrf-token": signed_in.json()["csrf_token"]}
    own = world.http.post(f"/api{path}/search", json=body, headers={**cookie, **csrf})
    assert own.status_code == 200, own.text


@BOTH
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"patient_id": "x" * 65}, 422),
        ({"patient_id": ""}, 422),
        ({"accession": 12}, 422),  # JSON: a number is not text
        ({"limit": "10"}, 422),  # nor text a number
        ({"limit": 0}, 422),
        ({"from": "2026-06-12", "to": "2026-06-01"}, 422),
        ({"from": "yesterday"}, 422),
        ({"format": "pdf"}, 422),
        ({"colour": "red"}, 422),
        ({"institution": None}, 422),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(
    world: World, path: str, body: dict[str, Any], status: int
) -> None:
    answer = world.search("a-admin", path, {"institution": "A", **body})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    assert _readings(world) == []
    assert world.search("a-admin", path, {"institution": "A"}).status_code == 200


@BOTH
def test_a_body_that_is_not_json_is_refused(world: World, path: str) -> None:
    url, auth = f"/api{path}/search", world.as_("a-admin")
    as_form = world.http.post(url, headers=auth, data={"institution": "A", "patient_id": "P"})
    assert as_form.status_code == 415
    broken = world.http.post(url, headers={**auth, "content-type": "application/json"},
                             content=b'{"institution": "A",')  # fmt: skip
    assert broken.status_code == 422
    assert world.search("a-admin", path, []).status_code == 422
    assert _readings(world) == []


def test_an_unknown_kind_in_a_search_is_a_bad_query(world: World) -> None:
    answer = world.search("a-admin", TRANSACTIONS, {"institution": "A", "kind": "fax"})
    assert answer.status_code == 400 and "kind is one of" in answer.json()["error"]
    assert [(e.actor, e.detail) for e in _readings(world)] == []
