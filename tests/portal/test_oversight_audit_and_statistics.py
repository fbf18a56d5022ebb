"""The scoped System Audit Trail and the statistics over the real API, and who may read them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.trail import AuditRecord, record
from tests.conftest import RunningServer
from tests.portal._oversight_world import World, build_world

AUDIT, STATISTICS = "/oversight/audit", "/oversight/statistics"
B_STUDY = "1.2.826.0.1.777.1"


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    built = build_world(server, tmp_path)
    engine = server.archive.engine
    others = (
        # B's own business, C's people: never A's
        AuditRecord("administer", "allowed", "user:b-admin@ferry.test", "user",
                    institution_pk=built.pks["B"], patient_id="PAT-B"),
        AuditRecord("read-pixels", "allowed", "user:b-user@ferry.test", "user",
                    institution_pk=built.pks["B"], study_uid=B_STUDY, patient_id="PAT-B"),
        AuditRecord("login", "allowed", "user:c-admin@ferry.test", "user"),
        # A's people signing in, and B reading a study of A's: A's business
        AuditRecord("login", "allowed", "user:a-user@ferry.test", "user"),
    )  # fmt: skip
    for event in others:
        record(engine, event)
    try:
        yield built
    finally:
        built.http.close()


def trail(world: World, who: str = "a-auditor", **params: Any) -> dict[str, Any]:
    response = world.get(who, AUDIT, params={"institution": "A", **params})
    assert response.status_code == 200, response.text
    return response.json()


def searched(world: World, who: str = "a-auditor", **criteria: Any) -> dict[str, Any]:
    response = world.search(who, AUDIT, {"institution": "A", **criteria})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_trail_holds_the_institutions_events_and_nothing_else(world: World) -> None:
    events = trail(world, limit=1000)["events"]
    assert events[0]["action"] == "audit"  # this very reading comes first
    patients = {e["patient_id"] for e in events}
    assert {"PAT-1", "PAT-2"} <= patients and "PAT-B" not in patients
    actors = {e["actor"] for e in events}
    assert "user:a-user@ferry.test" in actors and "user:c-admin@ferry.test" not in actors
    assert "user:b-user@ferry.test" in actors  # B downloaded A's study: A sees it
    downloads = [e for e in events if e["action"] == "download"]
    assert downloads and all(e["transaction"] == world.ids["t1"] for e in downloads)
    assert all(e["institution"] in ("A", "B", "") for e in events)
    b_view = [e["patient_id"] for e in trail(world, "b-admin", institution="B")["events"]]
    assert "PAT-B" in b_view


def test_filters_paging_and_csv(world: World) -> None:
    w = world.ids
    by_transaction = trail(world, transaction=w["t1"])["events"]
    assert by_transaction and {e["transaction"] for e in by_transaction} == {w["t1"]}
    by_patient = searched(world, patient_id="PAT-2")["events"]
    assert by_patient and {e["patient_id"] for e in by_patient} == {"PAT-2"}
    assert {e["accession_number"] for e in searched(world, accession="ACC-PAT-1")["events"]} == {
        "ACC-PAT-1"
    }
    by_user = trail(world, user="user:b-user@ferry.test")["events"]
    assert by_user and {e["actor"] for e in by_user} == {"user:b-user@ferry.test"}
    b_patient = searched(world, patient_id="PAT-B")["events"]
    assert [e["action"] for e in b_patient] == ["audit"]  # only this search: B's stay B's
    day = world.audit(action="transfer")[-1].at.date().isoformat()  # the trail's own clock
    recent = trail(world, **{"from": day, "to": day}, action="transfer")["events"]
    assert recent and all(e["at"].startswith(day) for e in recent)
    assert trail(world, **{"from": "2026-01-01", "to": "2026-01-31"})["events"] == []
    first = trail(world, limit=2)
    assert len(first["events"]) == 2 and first["next_before_pk"]
    second = trail(world, limit=2, before_pk=first["next_before_pk"])
    assert second["events"][0]["pk"] < first["events"][-1]["pk"]
    exported = world.search("a-auditor", AUDIT, {"institution": "A", "format": "csv",
                                                 "patient_id": "PAT-1"})  # fmt: skip
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and {row["patient_id"] for row in rows} == {"PAT-1"}
    assert [int(row["pk"]) for row in rows] == sorted(int(row["pk"]) for row in rows)


def test_reading_the_trail_is_audited(world: World) -> None:
    searched(world, patient_id="PAT-1")
    readings = [e for e in world.audit(action="audit", patient_id="PAT-1")
                if e.actor == "user:a-auditor@ferry.test"]  # fmt: skip
    assert len(readings) == 1 and readings[0].institution_pk == world.pks["A"]
    assert '"view":"audit trail"' in readings[0].detail


def stats(world: World, who: str = "a-admin", **params: Any) -> dict[str, Any]:
    response = world.get(who, STATISTICS, params={"institution": "A", **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_statistics_volumes_turnaround_and_failures(world: World) -> None:
    daily = stats(world)
    volumes = {(v["period"], v["direction"], v["counterpart"], v["modality"]): v
               for v in daily["volumes"]}  # fmt: skip
    assert set(volumes) == {
        ("2026-06-10", "sent", "B", "CT"),
        ("2026-06-11", "received", "C", ""),  # pushed, and not in Ferry
        ("2026-06-12", "sent", "B", "MR"),
    }
    ct = volumes[("2026-06-10", "sent", "B", "CT")]
    assert (ct["transactions"], ct["studies"], ct["instances"]) == (1, 1, 3) and ct["bytes"] > 0
    assert volumes[("2026-06-11", "received", "C", "")]["studies"] == 0
    turnaround = {(t["measure"], t["direction"]): t for t in daily["turnaround"]}
    downloaded = turnaround[("delivered-downloaded", "sent")]
    assert (downloaded["count"], downloaded["median_seconds"]) == (1, 4 * 3600)
    assert turnaround[("sent-delivered", "sent")]["count"] == 2
    answered = turnaround[("request-answer", "received")]
    assert (answered["count"], answered["median_seconds"], answered["p90_seconds"]) == (
        1, 7200, 7200,
    )  # fmt: skip
    assert turnaround[("request-answer", "sent")]["count"] == 0
    assert turnaround[("request-answer", "sent")]["median_seconds"] is None
    assert daily["failures"] == [{"period": "2026-06-13", "direction": "sent",
                                  "counterpart": "C", "kind": "push", "state": "failed",
                                  "count": 1}]  # fmt: skip
    weekly = stats(world, interval="week")
    assert {v["period"] for v in weekly["volumes"]} == {"2026-06-08"}  # a Monday
    assert {v["period"] for v in stats(world, interval="month")["volumes"]} == {"2026-06-01"}
    narrow = stats(world, **{"from": "2026-06-11", "to": "2026-06-11"})
    assert [v["period"] for v in narrow["volumes"]] == ["2026-06-11"]
    b = stats(world, "b-admin", institution="B")
    assert stats_pairs(b) == {("2026-06-10", "received", "A", "CT"),
                              ("2026-06-12", "received", "A", "MR"),
                              ("2026-06-13", "received", "C", "")}  # fmt: skip
    b_turnaround = {(t["measure"], t["direction"]): t for t in b["turnaround"]}
    assert b_turnaround[("request-answer", "sent")]["median_seconds"] == 7200


def stats_pairs(answer: dict[str, Any]) -> set[tuple[str, ...]]:
    return {(v["period"], v["direction"], v["counterpart"], v["modality"])
            for v in answer["volumes"]}  # fmt: skip


def test_statistics_as_csv(world: World) -> None:
    response = world.get("a-auditor", STATISTICS, params={"institution": "A"},
                         headers={"accept": "text/csv"})  # fmt: skip
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["section"] for row in rows} == {"volume", "turnaround", "failure"}
    [failure] = [row for row in rows if row["section"] == "failure"]
    assert (failure["counterpart"], failure["state"], failure["count"]) == ("C", "failed", "1")


@pytest.mark.parametrize("path", [AUDIT, STATISTICS])
def test_who_may_read_them(world: World, path: str) -> None:
    for who in ("a-admin", "a-auditor", "system", "a-audit-token"):
        assert world.get(who, path, params={"institution": "A"}).status_code == 200, who
    for who in ("c-admin", "c-auditor", "b-admin", "b-user", "sec-auditor"):
        foreign = world.get(who, path, params={"institution": "A"})
        assert foreign.status_code == 404, who
        assert foreign.json() == {"error": "no institution 'A'", "status": 404}
    for who in ("a-user", "a-requester", "a-read-token"):
        refused = world.get(who, path, params={"institution": "A"})
        assert refused.status_code == 403 and "may not audit" in refused.json()["error"], who
    assert world.get("a-admin", path, params={"institution": "A-SEC"}).status_code == 403
    assert world.get("a-admin", path, params={"institution": "C"}).status_code == 404
    assert world.get("a-admin", path, params={"institution": "NOWHERE"}).status_code == 404
    assert world.http.get(f"/api{path}", params={"institution": "A"}).status_code == 401
    denied = [e for e in world.audit(action="audit", outcome="denied") if path in e.detail]
    assert len(denied) >= 9


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (AUDIT, {"from": "2026-02-30"}),
        (AUDIT, {"from": "2026-06-12", "to": "2026-06-01"}),
        (AUDIT, {"limit": "1000000"}),
        (AUDIT, {"before_pk": "0"}),
        (AUDIT, {"outcome": "maybe"}),
        (AUDIT, {"format": "pdf"}),
        (AUDIT, {"study": "not-a-uid"}),
        (AUDIT, {"patient_id": "PAT-1"}),  # never in a URL: POST .../search
        (AUDIT, {"accession": "ACC-PAT-1"}),
        (STATISTICS, {"interval": "year"}),
        (STATISTICS, {"to": "tomorrow"}),
        (STATISTICS, {"from": "2026-06-12T10:00:00+00:00", "to": "2026-06-12T09:00:00+00:00"}),
        (STATISTICS, {"format": "xlsx"}),
        (STATISTICS, {"institution": ""}),
    ],
)
def test_bad_input_is_refused_with_a_reason(world: World, path: str, params: dict) -> None:
    response = world.get("a-admin", path, params={"institution": "A", **params})
    assert response.status_code == 422, response.text
    assert response.json()["error"]
    assert world.get("a-admin", path, params={"institution": "A"}).status_code == 200
