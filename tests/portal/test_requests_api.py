"""Requests and answers over the real HTTP API: a GP practice asks hospital A for priors.

Hospital A's PACS is a pynetdicom Q/R SCP (C-FIND, C-GET); emails go to a real SMTP server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from audit.search import AuditQuery, iter_events
from dimse.context import BridgeContext
from exchange.request_expiry import request_sweeper
from ferry.background import build_worker
from ferry.settings import SettingsError, load_settings, replace_settings
from foundation.jobs import JobQueue, Worker
from policy import store
from policy.models import RetrieveMethod
from tests import factories
from tests.conftest import RunningServer, free_port, issue_token_for
from tests.dimse.test_remote import RemotePacs
from tests.exchange._smtp import SmtpServer, smtp_server
from tests.factories import StudySpec, write_series

PATIENT = "GP-PAT-7"


@dataclass
class World:
    server: RunningServer
    http: httpx.Client
    tokens: dict[str, str]
    pks: dict[str, int]
    pacs: RemotePacs
    smtp: SmtpServer
    worker: Worker
    in_ferry: StudySpec
    on_pacs: list[StudySpec]

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(f"/api{path}", headers=self.as_(who), **kwargs)

    def post(self, who: str, path: str, body: object = None) -> httpx.Response:
        return self.http.post(f"/api{path}", headers=self.as_(who), json=body or {})

    def ask(self, who: str = "gp", **fields: Any) -> httpx.Response:
        body = {
            "institution": "PRACTICE",
            "asked": "HOSPA",
            "patient": {"id": PATIENT, "name": "Doe^Jane", "birth_date": "19700101", "sex": "F"},
            "details": f"all priors for {PATIENT}",
            "reason": "new chest pain",
            **fields,
        }
        return self.post(who, "/requests", body)

    def audit(self, **criteria: Any) -> list[Any]:
        return list(iter_events(self.server.archive.engine, AuditQuery(**criteria)))

    def mail_to(self, who: str) -> list[Any]:
        return self.smtp.mailbox.to(f"{who}@ferry.test")


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    engine = server.archive.engine
    practice = store.create_institution(engine, "PRACTICE", "Riverside Practice").pk
    hospa = store.create_institution(engine, "HOSPA", "Hospital A").pk
    c = store.create_institution(engine, "C", "Elsewhere").pk
    assert practice and hospa and c
    factories.create_node(engine, practice, "PRACTICE_PC", "127.0.0.1", 11111, can_write=True)
    store.create_destination_rule(engine, practice, sender_institution_pk=hospa)  # its worklist
    people = {
        "gp": {practice: "requester"},
        "practice-viewer": {practice: "viewer,receiver"},
        "a-sender": {hospa: "sender"},
        "a-requester": {hospa: "requester"},
        "c-user": {c: "sender,requester,admin"},
    }
    tokens, pks = {}, {"PRACTICE": practice, "HOSPA": hospa, "C": c}
    for who, memberships in people.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        for institution_pk, roles in memberships.items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        tokens[who] = issue_token_for(server.app, server.archive, user.pk)
    in_ferry = StudySpec(patient_id=PATIENT, accession_number="ACC-F1", modality="CT")
    paths = write_series(tmp_path / "ferry", 2, spec=in_ferry)
    assert all(o.stored for o in server.archive.store_files(paths, None, hospa))
    pacs = RemotePacs("PACS_A", {})
    on_pacs = [StudySpec(patient_id=PATIENT, accession_number=f"ACC-P{n}") for n in (1, 2)]
    for spec in on_pacs:
        pacs.add_study(spec, 2)
    pacs.add_study(StudySpec(patient_id="SOMEONE-ELSE", accession_number="ACC-X"), 1)
    factories.create_node(
        engine, hospa, "PACS_A", "127.0.0.1", pacs.port, can_query=True, can_write=True,
        retrieve_method=RetrieveMethod.GET.value,
    )  # fmt: skip
    try:
        with smtp_server() as smtp, httpx.Client(base_url=server.base_url, timeout=60) as http:
            settings = replace_settings(
                server.settings, smtp_host="127.0.0.1", smtp_port=smtp.port,
                smtp_starttls=False, mail_from="Ferry <ferry@ferry.test>",
            )  # fmt: skip
            worker = build_worker(BridgeContext(settings.dimse(), server.archive), settings)
            yield World(server, http, tokens, pks, pacs, smtp, worker, in_ferry, on_pacs)
    finally:
        pacs.stop()


def test_a_gp_asks_for_priors_and_hospital_a_answers_from_its_pacs_and_ferry(
    world: World, ferry_cli: Any
) -> None:
    created = world.ask(urgency="urgent")
    assert created.status_code == 201, created.text
    request = created.json()
    rid = request["id"]
    assert request["status"] == "open" and request["side"] == "requester" and not rid.isdigit()
    world.worker.run_until_idle()
    [received] = world.mail_to("a-sender")
    assert "Request received from Riverside Practice" in received.subject
    assert PATIENT not in received.raw.decode()  # no patient data in email

    incoming = world.get("a-sender", "/requests", params={"direction": "incoming"}).json()
    assert [item["id"] for item in incoming["items"]] == [rid] and incoming["total"] == 1
    assert world.get("gp", "/requests", params={"direction": "incoming"}).json()["total"] == 0

    in_ferry = world.post("a-sender", f"/requests/{rid}/search", {}).json()
    assert [m["study_uid"] for m in in_ferry["matches"]] == [world.in_ferry.study_uid]
    assert in_ferry["query"] == [{"PatientID": PATIENT}]
    on_pacs = world.post("a-sender", f"/requests/{rid}/search", {"node": "PACS_A"}).json()
    assert {m["study_uid"] for m in on_pacs["matches"]} == {s.study_uid for s in world.on_pacs}
    assert {m["source"] for m in on_pacs["matches"]} == {"PACS_A"}
    assert world.get("gp", f"/requests/{rid}").json()["status"] == "in-progress"

    picks = [{"study_uid": world.in_ferry.study_uid}] + [
        {"study_uid": s.study_uid, "node": "PACS_A"} for s in world.on_pacs
    ]
    answered = world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks})
    assert answered.status_code == 200, answered.text
    queued = answered.json()  # the fetch from the PACS is a job: nothing waits for it
    assert queued["status"] == "in-progress" and queued["answers"] == []
    assert queued["history"][-1]["reason"].startswith("fetching 2 studies from PACS_A")
    again = world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks[:1]})
    assert again.status_code == 409 and "already" in again.json()["error"]
    world.worker.run_until_idle()
    seen = world.get("gp", f"/requests/{rid}").json()
    assert seen["status"] == "answered" and len(seen["answers"]) == 1
    progress = [(h["status"], h["reason"].split(" ")[0]) for h in seen["history"]]
    assert progress == [
        ("open", "created"),
        ("in-progress", "searching"),
        ("in-progress", "fetching"),
        ("in-progress", "fetched"),
        ("in-progress", "fetched"),
        ("answered", "sent"),
    ]
    assert seen["history"][-2]["reason"].endswith("(2 of 2)")
    assert seen["history"][-1]["actor"] == "user:a-sender@ferry.test"

    worklist = world.get("practice-viewer", "/worklist", params={"institution": "PRACTICE"})
    [item] = worklist.json()["items"]
    assert item["id"] == seen["answers"][0] and item["priority"] == "urgent"
    wanted = {world.in_ferry.study_uid, *(s.study_uid for s in world.on_pacs)}
    assert {s["study_uid"] for s in item["studies"]} == wanted
    assert all(s["in_archive"] and s["patient_id"] == PATIENT for s in item["studies"])

    world.worker.run_until_idle()
    [answer_mail] = world.mail_to("gp")
    assert "Request answered by Hospital A" in answer_mail.subject
    assert "URGENT" in answer_mail.subject

    story = world.audit(transaction=rid)
    steps = [(e.action, orjson.loads(e.detail).get("step")) for e in story]
    assert ("request", "created") in steps and ("answer", "answered") in steps
    assert ("answer", "fetching") in steps
    answers = [
        e for e in story if (e.action, orjson.loads(e.detail).get("step")) == ("answer", "answered")
    ]
    assert {e.study_uid for e in answers} == wanted
    assert {e.accession_number for e in answers} == {"ACC-F1", "ACC-P1", "ACC-P2"}
    assert all(e.patient_id == PATIENT for e in story)
    assert world.audit(patient_id=PATIENT, action="retrieve")  # the C-GETs, on A's behalf
    verified = ferry_cli("audit", "verify")
    assert verified.code == 0, verified.err

    cancel = world.post("gp", f"/requests/{rid}/cancel", {"reason": "too late"})
    assert cancel.status_code == 409 and "answered" in cancel.json()["error"]
    assert world.audit(transaction=rid, outcome="denied", action="request")


def test_refusals_are_404_for_strangers_403_for_parties_and_audited(world: World) -> None:
    rid = world.ask().json()["id"]
    guessed = world.get("c-user", f"/requests/{rid}")
    missing = world.get("c-user", "/requests/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert guessed.status_code == missing.status_code == 404
    assert guessed.json()["error"] == f"no request {rid!r}"
    assert world.audit(transaction=rid, actor="user:c-user@ferry.test", outcome="denied")
    other = world.post("c-user", f"/requests/{rid}/answer", {"studies": [{"study_uid": "1.2"}]})
    assert other.status_code == 404
    assert world.post("c-user", f"/requests/{rid}/reject", {"reason": "no"}).status_code == 404
    own = world.post("gp", f"/requests/{rid}/answer", {"studies": [{"study_uid": "1.2"}]})
    assert own.status_code == 403 and "may not answer" in own.json()["error"]
    assert world.post("a-requester", f"/requests/{rid}/search", {}).status_code == 404
    assert world.post("a-sender", f"/requests/{rid}/cancel", {}).status_code == 403
    assert len(world.audit(transaction=rid, outcome="denied")) >= 5

    rejected = world.post("a-sender", f"/requests/{rid}/reject", {"reason": "not our patient"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert world.get("gp", f"/requests/{rid}").json()["status_reason"] == "not our patient"
    world.worker.run_until_idle()
    assert any("rejected by Hospital A" in m.subject for m in world.mail_to("gp"))
    assert world.audit(transaction=rid, action="answer", outcome="allowed")
    again = world.post("a-sender", f"/requests/{rid}/reject", {"reason": "twice"})
    assert again.status_code == 409


def test_bad_input_is_refused_with_a_reason(world: World) -> None:
    node = world.ask(node="NO_SUCH_NODE")
    assert node.status_code == 400 and "NO_SUCH_NODE" in node.json()["error"]
    foreign = world.ask(node="PACS_A")  # A's node, not the practice's
    assert foreign.status_code == 400
    empty = world.ask(patient={"id": "", "name": ""})
    assert empty.status_code == 400 and "Patient ID" in empty.json()["error"]
    long = world.ask(details="x" * 4001)
    assert long.status_code == 422 and "details" in long.json()["error"]
    huge = world.ask(details="x" * 1_000_000)
    assert huge.status_code == 413
    date = world.ask(study_date_from="2026-01-01")
    assert date.status_code == 422
    refused = world.ask(who="a-sender", institution="HOSPA", asked="PRACTICE")
    assert refused.status_code == 403  # a sender may answer, not request
    rid = world.ask(node="PRACTICE_PC").json()["id"]
    unknown = world.post(
        "a-sender", f"/requests/{rid}/answer", {"studies": [{"study_uid": "1.2.3", "node": "X"}]}
    )
    assert unknown.status_code == 400
    nothing = world.post("a-sender", f"/requests/{rid}/answer", {"studies": []})
    assert nothing.status_code == 422
    # no destination rule lets A send to the practice's node: refused, nothing left behind
    pick = {"studies": [{"study_uid": world.in_ferry.study_uid}]}
    refused = world.post("a-sender", f"/requests/{rid}/answer", pick)
    assert refused.status_code == 403 and "no destination rule" in refused.json()["error"]
    after = world.get("gp", f"/requests/{rid}").json()
    assert after["status"] == "in-progress" and after["answers"] == []
    assert after["history"][-1]["reason"].startswith("answer not sent")
    [draft] = world.get("a-sender", "/transfers").json()
    assert draft["status"] == "cancelled"
    assert world.audit(transaction=rid, action="answer", outcome="denied")


def test_nothing_found_cancel_and_expiry(world: World) -> None:
    first = world.ask().json()["id"]
    done = world.post("a-sender", f"/requests/{first}/nothing-found", {"reason": "no such patient"})
    assert done.json()["status"] == "nothing-found"
    second = world.ask().json()["id"]
    cancelled = world.post("gp", f"/requests/{second}/cancel", {"reason": "found it locally"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert world.audit(transaction=second, action="request", outcome="allowed")
    third = world.ask(urgency="urgent").json()["id"]
    listed = world.get("a-sender", "/requests", params={"direction": "incoming", "limit": 1})
    assert listed.json()["total"] == 3 and listed.json()["items"][0]["id"] == third  # urgent
    pending = world.get("a-sender", "/requests", params={"status": "open"}).json()
    assert [item["id"] for item in pending["items"]] == [third]
    later = datetime.now(UTC) + timedelta(days=31)
    assert request_sweeper(world.server.archive.engine, lambda: later)() == 1
    expired = world.get("gp", f"/requests/{third}").json()
    assert expired["status"] == "expired" and expired["history"][-1]["actor"] == "ferry"
    assert world.audit(transaction=third, actor="ferry")


def test_the_expiry_is_the_configured_number_of_days(world: World) -> None:
    app = world.server.app
    # What `ferry serve` hands the app with FERRY_REQUEST_EXPIRY_DAYS=2 (checked below).
    app.state.portal = replace(app.state.portal, request_expiry_days=2)
    asked = world.ask().json()
    made = datetime.fromisoformat(asked["created_at"])
    assert datetime.fromisoformat(asked["expires_at"]) - made == timedelta(days=2)
    sweep = request_sweeper(world.server.archive.engine, lambda: made + timedelta(days=1))
    assert sweep() == 0 and world.get("gp", f"/requests/{asked['id']}").json()["status"] == "open"
    later = request_sweeper(world.server.archive.engine, lambda: made + timedelta(days=2, hours=1))
    assert later() == 1
    assert world.get("gp", f"/requests/{asked['id']}").json()["status"] == "expired"
    assert load_settings({"FERRY_REQUEST_EXPIRY_DAYS": "2"}).portal().request_expiry_days == 2
    assert load_settings({}).portal().request_expiry_days == 30
    with pytest.raises(SettingsError, match="FERRY_REQUEST_EXPIRY_DAYS"):
        load_settings({"FERRY_REQUEST_EXPIRY_DAYS": "0"})


def test_a_study_the_pacs_does_not_have_makes_a_partial_answer(world: World) -> None:
    rid = world.ask(accession_numbers=["ACC-F1", "ACC-GONE"]).json()["id"]
    found = world.post("a-sender", f"/requests/{rid}/search", {}).json()
    assert found["query"] == [
        {"PatientID": PATIENT, "AccessionNumber": "ACC-F1"},
        {"PatientID": PATIENT, "AccessionNumber": "ACC-GONE"},
    ]
    assert [m["accession_number"] for m in found["matches"]] == ["ACC-F1"]
    picks = [
        {"study_uid": world.in_ferry.study_uid},
        {"study_uid": "1.2.826.0.1.3680043.99.1", "node": "PACS_A"},
    ]
    queued = world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks}).json()
    assert queued["status"] == "in-progress"
    world.worker.run_until_idle()
    answered = world.get("a-sender", f"/requests/{rid}").json()
    assert answered["status"] == "partly-answered"
    assert "not sent: 1.2.826.0.1.3680043.99.1 from PACS_A" in answered["status_reason"]
    assert world.audit(action="retrieve", outcome="failed")


def test_an_answer_nothing_of_which_can_be_fetched_stays_in_progress_and_says_why(
    world: World,
) -> None:
    rid = world.ask().json()["id"]
    picks = [{"study_uid": "1.2.826.0.1.3680043.99.2", "node": "PACS_A"}]
    queued = world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks})
    assert queued.status_code == 200 and queued.json()["status"] == "in-progress"
    world.worker.run_until_idle()
    seen = world.get("gp", f"/requests/{rid}").json()
    assert seen["status"] == "in-progress" and seen["answers"] == []
    assert seen["history"][-2]["reason"].startswith("could not fetch 1.2.826.0.1.3680043.99.2")
    assert seen["history"][-1]["reason"].startswith("none of the picked studies")
    assert world.audit(transaction=rid, action="answer", outcome="failed")
    [job] = JobQueue(world.server.archive.engine).list(kind="exchange.answer")
    assert job.status == "parked" and "none of the picked" in job.last_error
    world.worker.run_until_idle()
    not_sent = [m.subject for m in world.mail_to("a-sender") if "not sent" in m.subject]
    assert not_sent == ["[Ferry] Answer to Riverside Practice (PRACTICE) not sent"]
    assert not [m for m in world.mail_to("gp") if "not sent" in m.subject]
    # the answer can be given again, now from Ferry's archive
    pick = {"studies": [{"study_uid": world.in_ferry.study_uid}]}
    assert world.post("a-sender", f"/requests/{rid}/answer", pick).json()["status"] == "answered"


def test_the_requester_cancelling_while_the_pacs_is_fetched_stops_the_answer(world: World) -> None:
    rid = world.ask().json()["id"]
    picks = [{"study_uid": world.on_pacs[0].study_uid, "node": "PACS_A"}]
    assert world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks}).status_code == 200
    assert world.post("gp", f"/requests/{rid}/cancel", {"reason": "not needed"}).status_code == 200
    world.worker.run_until_idle()
    seen = world.get("gp", f"/requests/{rid}").json()
    assert seen["status"] == "cancelled" and seen["answers"] == []
    assert world.get("a-sender", "/transfers").json() == []


def test_an_answer_from_a_pacs_that_does_not_answer_waits_for_it(world: World) -> None:
    from tests.portal.test_node_transfers_api import move_pacs

    rid = world.ask().json()["id"]
    world.worker.run_until_idle()  # the emails of the request
    move_pacs(world, free_port())
    down = world.post("a-sender", f"/requests/{rid}/search", {"node": "PACS_A"})
    assert down.status_code == 502 and down.json()["error"].startswith("PACS_A at 127.0.0.1:")
    picks = [{"study_uid": world.in_ferry.study_uid},
             {"study_uid": world.on_pacs[0].study_uid, "node": "PACS_A"}]  # fmt: skip
    assert world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks}).status_code == 200
    world.worker.queue.retry_base_seconds = 0  # each run due at once, run one by one
    assert world.worker.run_once()
    waiting = world.get("gp", f"/requests/{rid}").json()
    assert waiting["status"] == "in-progress" and waiting["answers"] == []
    note = waiting["history"][-1]["reason"]
    assert note.startswith("PACS_A could not be reached (PACS_A at 127.0.0.1:")
    assert note.endswith("Ferry tries again shortly (attempt 1 of 8)")

    move_pacs(world, world.pacs.port)  # the PACS is back
    assert world.worker.run_once()
    answered = world.get("gp", f"/requests/{rid}").json()
    assert answered["status"] == "answered", answered["history"]
    [item] = world.get("practice-viewer", "/worklist", params={"institution": "PRACTICE"}).json()[
        "items"
    ]
    wanted = {world.in_ferry.study_uid, world.on_pacs[0].study_uid}
    assert {s["study_uid"] for s in item["studies"]} == wanted


def test_an_answer_whose_pacs_never_answers_sends_what_ferry_holds(world: World) -> None:
    from tests.portal.test_node_transfers_api import move_pacs

    rid = world.ask().json()["id"]
    move_pacs(world, free_port())
    picks = [{"study_uid": world.in_ferry.study_uid},
             {"study_uid": world.on_pacs[0].study_uid, "node": "PACS_A"}]  # fmt: skip
    assert world.post("a-sender", f"/requests/{rid}/answer", {"studies": picks}).status_code == 200
    world.worker.queue.retry_base_seconds = 0
    world.worker.run_until_idle()
    seen = world.get("gp", f"/requests/{rid}").json()
    assert seen["status"] == "partly-answered"
    reasons = [h["reason"] for h in seen["history"]]
    assert sum("Ferry tries again shortly" in r for r in reasons) == 7
    untried = f"could not fetch {world.on_pacs[0].study_uid} from PACS_A: PACS_A at 127.0.0.1:"
    assert any(r.startswith(untried) for r in reasons), reasons
    [job] = JobQueue(world.server.archive.engine).list(kind="exchange.answer")
    assert (job.status, job.attempts) == ("done", 8)
