"""The Transaction Audit Summary over the real API: A's administrators and auditors see A's."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.oversight._csv import cell
from tests.conftest import RunningServer
from tests.portal._oversight_world import World, opened_world

PATH = "/oversight/transactions"


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    yield from opened_world(server, tmp_path)


def listed(world: World, who: str = "a-admin", **params: Any) -> dict[str, Any]:
    response = world.get(who, PATH, params={"institution": "A", **params})
    assert response.status_code == 200, response.text
    return response.json()


def searched(world: World, who: str = "a-admin", **criteria: Any) -> dict[str, Any]:
    response = world.search(who, PATH, {"institution": "A", **criteria})
    assert response.status_code == 200, response.text
    return response.json()


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["id"] for item in answer["items"]]


def test_an_administrator_sees_what_the_institution_sent_and_received(world: World) -> None:
    answer = listed(world)
    w = world.ids
    assert ids(answer) == [w["failed"], w["t2"], w["request"], w["push"], w["t1"]]
    assert answer["total"] == 5 and answer["institution"] == "A"
    by_id = {item["id"]: item for item in answer["items"]}
    t1 = by_id[w["t1"]]
    assert (t1["kind"], t1["direction"], t1["sender"], t1["receiver"], t1["counterpart"]) == (
        "transfer", "sent", "A", "B", "B",
    )  # fmt: skip
    assert (t1["patient_id"], t1["accession_number"], t1["studies"]) == ("PAT-1", "ACC-PAT-1", 1)
    assert t1["state"] == "downloaded"
    times = [t1[k][:16] for k in ("created_at", "sent_at", "delivered_at", "viewed_at",
                                  "downloaded_at")]  # fmt: skip
    assert times == ["2026-06-10T10:00", "2026-06-10T10:00", "2026-06-10T10:00",
                     "2026-06-10T12:00", "2026-06-10T14:00"]  # fmt: skip
    request = by_id[w["request"]]
    assert (request["kind"], request["direction"], request["counterpart"]) == (
        "request", "received", "B",
    )  # fmt: skip
    assert request["state"] == "answered" and request["answered_at"].startswith("2026-06-12T10")
    assert request["sent_at"].startswith("2026-06-12T10") and request["studies"] == 1
    push = by_id[w["push"]]
    assert (push["kind"], push["direction"], push["sender"], push["state"]) == (
        "push", "received", "C", "delivered",
    )  # fmt: skip
    assert push["delivered_at"].startswith("2026-06-11T09:05") and push["patient_id"] == ""


def test_filters_sorting_and_paging(world: World) -> None:
    w = world.ids
    assert ids(listed(world, direction="sent")) == [w["failed"], w["t2"], w["t1"]]
    assert ids(listed(world, direction="received")) == [w["request"], w["push"]]
    assert ids(listed(world, kind="request")) == [w["request"]]
    assert ids(listed(world, kind="push,request")) == [w["failed"], w["request"], w["push"]]
    assert ids(listed(world, state="failed,delivered")) == [w["failed"], w["push"]]
    assert ids(searched(world, patient_id="PAT-1")) == [w["failed"], w["t1"]]
    assert ids(searched(world, accession="ACC-PAT-2")) == [w["t2"], w["request"]]
    assert ids(listed(world, counterpart="C")) == [w["failed"], w["push"]]
    nowhere = listed(world, counterpart="NOWHERE")
    assert nowhere["total"] == 0 and nowhere == {**listed(world, counterpart="A-SEC")}
    assert ids(listed(world, **{"from": "2026-06-11", "to": "2026-06-12"})) == [
        w["t2"], w["request"], w["push"],
    ]  # fmt: skip
    assert ids(listed(world, **{"from": "2026-06-12T09:00:00+00:00"})) == [w["failed"], w["t2"]]
    oldest = listed(world, order="asc", limit=2)
    assert ids(oldest) == [w["t1"], w["push"]] and oldest["total"] == 5
    assert ids(listed(world, order="asc", limit=2, offset=4)) == [w["failed"]]
    by_download = ids(listed(world, sort="downloaded"))
    assert by_download[0] == w["t1"]  # the only one downloaded; blank times go last
    assert ids(listed(world, sort="patient_id", order="asc"))[-2:] in (
        [w["t2"], w["request"]], [w["request"], w["t2"]],
    )  # fmt: skip


def test_the_other_side_sees_its_own_view(world: World) -> None:
    w = world.ids
    b = world.get("b-admin", PATH, params={"institution": "B"}).json()
    assert set(ids(b)) == {w["t1"], w["t2"], w["request"]} | (set(ids(b)) - set(w.values()))
    assert w["push"] not in ids(b) and w["failed"] not in ids(b)
    by_id = {item["id"]: item for item in b["items"]}
    assert by_id[w["request"]]["direction"] == "sent"
    assert by_id[w["t1"]]["direction"] == "received"
    c_to_b = [item for item in b["items"] if item["sender"] == "C"]
    assert len(c_to_b) == 1 and b["total"] == 4


def test_csv_export_streams_every_row(world: World) -> None:
    for kwargs in ({"params": {"format": "csv"}}, {"headers": {"accept": "text/csv"}}):
        params = {"institution": "A", **kwargs.get("params", {})}
        response = world.get("a-auditor", PATH, params=params, headers=kwargs.get("headers", {}))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert "PAT" not in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [row["id"] for row in rows] == ids(listed(world))
        first = rows[-1]
        assert (first["sender"], first["receiver"], first["patient_id"]) == ("A", "B", "PAT-1")
        assert first["viewed_at"] == "2026-06-10T12:00:00Z"


def test_a_spreadsheet_never_runs_a_cell() -> None:
    assert cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert [cell(v) for v in ("+1", "-1", "@a", "\tx", "PAT-1", 5, None)] == [
        "'+1", "'-1", "'@a", "'\tx", "PAT-1", "5", "",
    ]  # fmt: skip


def test_who_may_see_it(world: World) -> None:
    for who in ("a-admin", "a-auditor", "system", "a-audit-token"):
        assert world.get(who, PATH, params={"institution": "A"}).status_code == 200, who
    unknown = world.get("c-admin", PATH, params={"institution": "NOWHERE"})
    assert unknown.status_code == 404
    for who in ("c-admin", "c-auditor", "b-admin", "b-user"):  # b-user holds grants of A's
        foreign = world.get(who, PATH, params={"institution": "A"})
        assert foreign.status_code == 404, who
        assert foreign.json()["error"] == "no institution 'A'"
        assert "PAT" not in foreign.text
    assert world.get("sec-auditor", PATH, params={"institution": "A"}).status_code == 404
    for who in ("a-user", "a-requester", "a-read-token"):
        refused = world.get(who, PATH, params={"institution": "A"})
        assert refused.status_code == 403, who
        assert "may not audit" in refused.json()["error"]
    beyond = world.get("a-admin", PATH, params={"institution": "A-SEC"})  # its security inst.
    assert beyond.status_code == 403
    assert world.get("a-admin", PATH, params={"institution": "B"}).status_code == 404
    denied = world.audit(action="audit", outcome="denied")
    assert len([e for e in denied if "/oversight/transactions" in e.detail]) >= 9
    assert world.http.get(f"/api{PATH}", params={"institution": "A"}).status_code == 401


def test_reading_is_audited(world: World) -> None:
    searched(world, "a-auditor", patient_id="PAT-1")
    [event] = [e for e in world.audit(action="audit", outcome="allowed")
               if e.actor == "user:a-auditor@ferry.test"]  # fmt: skip
    assert event.institution_pk == world.pks["A"] and event.patient_id == "PAT-1"
    assert '"view":"transactions"' in event.detail


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"to": "9999-12-31"},
        {"from": "2026-06-12", "to": "2026-06-11"},
        {"limit": "100000"},
        {"limit": "0"},
        {"offset": "-1"},
        {"format": "xml"},
        {"sort": "price"},
        {"direction": "sideways"},
        {"colour": "red"},
        {"institution": "not a code!"},
        {"patient_id": "PAT-1"},  # never in a URL: POST .../search
        {"accession": "ACC-PAT-1"},
    ],
)
def test_bad_input_is_refused_with_a_reason(world: World, params: dict[str, str]) -> None:
    response = world.get("a-admin", PATH, params={"institution": "A", **params})
    assert response.status_code == 422, response.text
    assert response.json()["error"]
    assert world.get("a-admin", PATH, params={"institution": "A"}).status_code == 200


def test_an_unknown_kind_is_a_bad_query(world: World) -> None:
    response = world.get("a-admin", PATH, params={"institution": "A", "kind": "fax"})
    assert response.status_code == 400 and "kind is one of" in response.json()["error"]
    csv_answer = world.get("a-admin", PATH, params={"institution": "A", "kind": "fax",
                                                    "format": "csv"})  # fmt: skip
    assert csv_answer.status_code == 400
    assert not [e for e in world.audit(action="audit", outcome="allowed") if "fax" in e.detail]
    missing = world.get("a-admin", PATH, params={})
    assert missing.status_code == 422
