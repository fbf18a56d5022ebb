"""Issue 11: a request answered to the requester's own node, end to end.

A GP practice with a PACS of its own (DCMTK's storescp) asks hospital A for a patient's studies,
to be sent to that node rather than its worklist. A answers with a study from Ferry's archive and
one from its PACS (a pynetdicom Q/R SCP, fetched by C-GET); the studies arrive at the practice's
storescp unchanged (SOP Instance UIDs, identity, pixel bytes). The request reads "answered", the
transfer "delivered", both sides see the history, the audit trail holds the steps. A request
naming a node that is not the practice's own (another institution's) is refused like a node
that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from pydicom import dcmread

from audit.search import AuditQuery, iter_events
from dimse.context import BridgeContext
from ferry.background import build_worker
from policy import store
from policy.models import RetrieveMethod
from tests import factories
from tests._peers import storescp
from tests.conftest import RunningServer, free_port, issue_token_for
from tests.dimse.test_remote import RemotePacs
from tests.factories import StudySpec, write_series

PATIENT = "GP-PAT-11"
IDENTITY = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
            "AccessionNumber")  # fmt: skip


def _identity(ds: Any) -> tuple[str, ...]:
    return tuple(str(ds.get(keyword, "")) for keyword in IDENTITY)


def _people(server: RunningServer, people: dict[str, dict[int, str]]) -> dict[str, dict[str, str]]:
    engine, headers = server.archive.engine, {}
    for who, memberships in people.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        assert user.pk
        for institution_pk, roles in memberships.items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        token = issue_token_for(server.app, server.archive, user.pk)
        headers[who] = {"authorization": f"Bearer {token}"}
    return headers


def test_a_gp_asks_for_studies_on_its_own_node_and_they_arrive_there_unchanged(
    server: RunningServer, tmp_path: Path
) -> None:
    engine, archive = server.archive.engine, server.archive
    practice = store.create_institution(engine, "PRACTICE", "Riverside Practice").pk
    hospa = store.create_institution(engine, "HOSPA", "Hospital A").pk
    c = store.create_institution(engine, "C", "Elsewhere").pk
    assert practice and hospa and c
    factories.create_node(engine, c, "PACS_C", "127.0.0.1", free_port(), can_write=True)
    tokens = _people(server, {
        "gp": {practice: "requester"},
        "practice-receiver": {practice: "receiver"},
        "a-sender": {hospa: "sender"},
    })  # fmt: skip

    in_ferry = StudySpec(patient_id=PATIENT, patient_name="Doe^Jane", accession_number="ACC-F1")
    paths = write_series(tmp_path / "ferry", 2, spec=in_ferry)
    sent = {ds.SOPInstanceUID: ds for ds in map(dcmread, paths)}  # storing takes the files
    assert all(o.stored for o in archive.store_files(paths, None, hospa))
    pacs = RemotePacs("PACS_A", {})
    on_pacs = StudySpec(patient_id=PATIENT, patient_name="Doe^Jane", accession_number="ACC-P1")
    sent |= {ds.SOPInstanceUID: ds for ds in pacs.add_study(on_pacs, 2)}
    pacs.add_study(StudySpec(patient_id="SOMEONE-ELSE", accession_number="ACC-X"), 1)
    factories.create_node(
        engine, hospa, "PACS_A", "127.0.0.1", pacs.port, can_query=True,
        retrieve_method=RetrieveMethod.GET.value,
    )  # fmt: skip
    node_port = free_port()
    try:
        with (
            storescp(tmp_path / "practice-pacs", node_port, ae_title="PRACTICE_PACS") as received,
            httpx.Client(base_url=server.base_url, timeout=60) as http,
        ):
            node = factories.create_node(engine, practice, "PRACTICE_PACS", "127.0.0.1",
                                         node_port, can_write=True).pk  # fmt: skip
            store.create_destination_rule(engine, practice, node_pk=node,
                                          sender_institution_pk=hospa)  # fmt: skip
            worker = build_worker(BridgeContext(server.settings.dimse(), archive), server.settings)

            body = {
                "institution": "PRACTICE", "asked": "HOSPA", "node": "PRACTICE_PACS",
                "patient": {"id": PATIENT, "name": "Doe^Jane", "birth_date": "19700101"},
                "details": f"all priors for {PATIENT}", "reason": "new chest pain",
            }  # fmt: skip
            asked = http.post("/api/requests", json=body, headers=tokens["gp"])
            assert asked.status_code == 201, asked.text
            rid = asked.json()["id"]
            assert asked.json()["node"] == "PRACTICE_PACS" and asked.json()["status"] == "open"

            picks = [{"study_uid": in_ferry.study_uid},
                     {"study_uid": on_pacs.study_uid, "node": "PACS_A"}]  # fmt: skip
            answered = http.post(f"/api/requests/{rid}/answer", json={"studies": picks},
                                 headers=tokens["a-sender"])  # fmt: skip
            assert answered.status_code == 200, answered.text
            assert answered.json()["status"] == "in-progress"  # the PACS study is fetched first
            worker.run_until_idle()  # the fetch, the answer, the deliveries to the node

            arrived = {ds.SOPInstanceUID: ds for ds in map(dcmread, received.iterdir())}
            assert set(arrived) == set(sent) and len(arrived) == 4
            for uid, ds in arrived.items():
                assert _identity(ds) == _identity(sent[uid])
                assert ds.PixelData == sent[uid].PixelData, uid

            request = http.get(f"/api/requests/{rid}", headers=tokens["gp"]).json()
            assert request["status"] == "answered" and request["node"] == "PRACTICE_PACS"
            [tid] = request["answers"]
            assert request["history"][-1]["reason"] == f"sent 2 studies in transfer {tid}"
            theirs = http.get(f"/api/requests/{rid}", headers=tokens["a-sender"]).json()
            assert theirs["history"] == request["history"]

            transfer = http.get(f"/api/transfers/{tid}", headers=tokens["a-sender"]).json()
            assert transfer["status"] == "delivered" and transfer["node"] == "PRACTICE_PACS"
            assert transfer["destination"] == "PRACTICE"
            # delivered once, when the second study is in (the first one's job notes it)
            steps = [(change["status"], change["reason"]) for change in transfer["history"]]
            assert [status for status, _ in steps] == [
                "draft", "sent", "delivering", "delivering", "delivered"
            ], steps  # fmt: skip
            assert (
                steps[3][1] == "sent 2 of 2 to PRACTICE_PACS; waiting for 1 more of the "
                "transfer's studies"
            )
            assert steps[4][1] == "sent 2 of 2 to PRACTICE_PACS"
            receiving = http.get(f"/api/transfers/{tid}", headers=tokens["practice-receiver"])
            assert receiving.status_code == 200, receiving.text
            assert receiving.json()["history"] == transfer["history"]
            worklist = http.get("/api/worklist", params={"institution": "PRACTICE"},
                                headers=tokens["practice-receiver"]).json()  # fmt: skip
            [item] = worklist["items"]  # the practice's list of what came in, and where to
            assert (item["id"], item["status"], item["node"]) == (tid, "delivered", "PRACTICE_PACS")
    finally:
        pacs.stop()

    story = list(iter_events(engine, AuditQuery(transaction=rid)))
    taken = {(e.action, e.outcome, orjson.loads(e.detail).get("step")) for e in story}
    assert {("request", "allowed", "created"), ("answer", "allowed", "fetching"),
            ("answer", "allowed", "answered")} <= taken  # fmt: skip
    assert all(e.patient_id == PATIENT for e in story)
    delivered = list(iter_events(engine, AuditQuery(transaction=tid, action="forward")))
    assert {e.study_uid for e in delivered} == {in_ferry.study_uid, on_pacs.study_uid}
    assert {e.outcome for e in delivered} == {"allowed"}
    transfer_story = iter_events(engine, AuditQuery(transaction=tid))
    journey = [(e.action, orjson.loads(e.detail).get("status")) for e in transfer_story]
    assert journey.count(("transfer", "delivered")) == 1, journey
    assert list(iter_events(engine, AuditQuery(patient_id=PATIENT, action="retrieve")))


def test_a_request_to_another_institutions_node_is_refused_like_a_missing_one(
    server: RunningServer,
) -> None:
    engine = server.archive.engine
    practice = store.create_institution(engine, "PRACTICE", "Riverside Practice").pk
    hospa = store.create_institution(engine, "HOSPA", "Hospital A").pk
    c = store.create_institution(engine, "C", "Elsewhere").pk
    assert practice and hospa and c
    factories.create_node(engine, practice, "PRACTICE_PACS", "127.0.0.1", free_port(),
                          can_write=True)  # fmt: skip
    factories.create_node(engine, c, "PACS_C", "127.0.0.1", free_port(), can_write=True)
    factories.create_node(engine, hospa, "PACS_A", "127.0.0.1", free_port(), can_write=True)
    tokens = _people(server, {"gp": {practice: "requester"}, "a-sender": {hospa: "sender"}})
    with httpx.Client(base_url=server.base_url, timeout=60) as http:

        def ask(node: str) -> httpx.Response:
            body = {"institution": "PRACTICE", "asked": "HOSPA", "node": node,
                    "patient": {"id": PATIENT}}  # fmt: skip
            return http.post("/api/requests", json=body, headers=tokens["gp"])

        missing = ask("NO_SUCH_NODE")
        assert missing.status_code == 400
        assert missing.json()["error"] == "the institution has no node 'NO_SUCH_NODE'"
        for foreign in ("PACS_C", "PACS_A"):  # a third institution's node; the asked one's
            refused = ask(foreign)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == f"the institution has no node {foreign!r}"
        for who in ("gp", "a-sender"):
            listed = http.get("/api/requests", headers=tokens[who]).json()
            assert listed["total"] == 0  # nothing was made
        assert ask("PRACTICE_PACS").status_code == 201
