"""A transfer of studies picked straight from the sender's own PACS (a pynetdicom Q/R SCP).

Hospital A searches its PACS_A by C-FIND, adds two of its studies to a draft for the practice's
worklist; the job worker fetches them (C-GET) and sends the transfer once both are in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlmodel import Session, select

from foundation.jobs import JobQueue
from policy import store
from policy.models import Node
from tests import factories
from tests.conftest import free_port
from tests.portal import test_requests_api
from tests.portal.test_requests_api import PATIENT, World

world = test_requests_api.world  # the same fixture: hospital A, its PACS_A, the practice


def _search(world: World, who: str = "a-sender", **body: Any) -> Any:
    request = {"institution": "HOSPA", "node": "PACS_A", "keys": {"PatientID": PATIENT}, **body}
    return world.post(who, "/transfers/node-search", request)


def _draft(world: World) -> str:
    body = {"institution": "HOSPA", "destination": "PRACTICE", "note": "priors for your patient"}
    created = world.post("a-sender", "/transfers", body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_sender_picks_studies_on_its_pacs_and_they_are_fetched_then_sent(world: World) -> None:
    found = _search(world)
    assert found.status_code == 200, found.text
    matches = found.json()["matches"]
    assert {m["study_uid"] for m in matches} == {s.study_uid for s in world.on_pacs}
    assert {m["patient_id"] for m in matches} == {PATIENT} and found.json()["source"] == "PACS_A"
    tid = _draft(world)
    picks = {"node": "PACS_A", "studies": [m["study_uid"] for m in matches], "send": True}
    queued = world.post("a-sender", f"/transfers/{tid}/node-studies", picks)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "draft" and queued.json()["studies"] == []
    assert queued.json()["history"][-1]["reason"].startswith("fetching 2 studies from PACS_A")
    twice = world.post("a-sender", f"/transfers/{tid}/node-studies", picks)
    assert twice.status_code == 409
    world.worker.run_until_idle()
    sent = world.get("a-sender", f"/transfers/{tid}").json()
    assert sent["status"] == "on-worklist", sent["history"]
    assert {s["study_uid"] for s in sent["studies"]} == {s.study_uid for s in world.on_pacs}
    reasons = [h["reason"] for h in sent["history"]]
    assert [r for r in reasons if r.startswith("fetched")][-1].endswith("(2 of 2)")
    worklist = world.get("practice-viewer", "/worklist", params={"institution": "PRACTICE"})
    assert [item["id"] for item in worklist.json()["items"]] == [tid]
    assert world.audit(transaction=tid, action="transfer", outcome="allowed")
    assert world.audit(patient_id=PATIENT, action="retrieve")  # the C-GETs, audited by the bridge
    assert world.audit(action="search", outcome="allowed")  # the C-FIND


def test_a_study_the_pacs_does_not_have_leaves_the_draft_unsent_and_says_why(
    world: World,
) -> None:
    tid = _draft(world)
    picks = {"node": "PACS_A", "studies": [world.on_pacs[0].study_uid, "1.2.826.0.1.3680043.99.3"],
             "send": True}  # fmt: skip
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", picks).status_code == 202
    world.worker.run_until_idle()
    shown = world.get("a-sender", f"/transfers/{tid}").json()
    assert shown["status"] == "draft"
    assert [s["study_uid"] for s in shown["studies"]] == [world.on_pacs[0].study_uid]
    assert shown["history"][-1]["reason"] == "not sent: 1 of 2 studies not fetched"
    assert any(h["reason"].startswith("could not fetch 1.2.826.0.1.3680043.99.3")
               for h in shown["history"])  # fmt: skip
    [job] = JobQueue(world.server.archive.engine).list(kind="exchange.transfer-fetch")
    assert job.status == "parked"


def test_refusals_another_institutions_node_a_requester_and_a_read_only_token(
    world: World,
) -> None:
    engine = world.server.archive.engine
    c = world.pks["C"]
    factories.create_node(engine, c, "PACS_C", "127.0.0.1", world.pacs.port, can_query=True)
    elsewhere = _search(world, node="PACS_C")  # C's node, asked for A
    unknown = _search(world, node="NO_SUCH")
    assert elsewhere.status_code == unknown.status_code == 404
    assert elsewhere.json()["error"] == "no node 'PACS_C'"
    stranger = _search(world, who="c-user")  # A, which c-user has no tie to
    assert stranger.status_code == 404
    requester = _search(world, who="a-requester")
    assert requester.status_code == 403
    client = store.create_api_client(engine, "reader", world.pks["HOSPA"], ["sender"])
    issued = store.issue_api_token(engine, client.pk or 0, ["read"], None)
    world.tokens["reader"] = issued.token
    read_only = _search(world, who="reader")
    assert read_only.status_code == 403
    assert len(world.audit(action="transfer", outcome="denied")) >= 3
    tid = _draft(world)
    picks = {"node": "PACS_A", "studies": [world.on_pacs[0].study_uid]}
    for who, status in (("c-user", 404), ("a-requester", 403), ("reader", 403)):
        refused = world.post(who, f"/transfers/{tid}/node-studies", picks)
        assert refused.status_code == status, (who, refused.text)
    foreign = world.post("a-sender", f"/transfers/{tid}/node-studies", {**picks, "node": "PACS_C"})
    assert foreign.status_code == 404
    assert JobQueue(engine).list(kind="exchange.transfer-fetch") == []


def test_bad_input(world: World) -> None:
    assert _search(world, keys={}).status_code == 400
    assert _search(world, keys={"PixelData": "x"}).status_code == 400
    assert _search(world, keys={"PatientID": "x" * 65}).status_code == 422
    assert _search(world, node="").status_code == 422
    tid = _draft(world)
    empty = world.post("a-sender", f"/transfers/{tid}/node-studies", {"node": "PACS_A",
                                                                        "studies": []})  # fmt: skip
    assert empty.status_code == 422
    sent = world.post("a-sender", f"/transfers/{tid}/send")
    assert sent.status_code == 400  # no studies yet
    assert world.get("a-sender", f"/transfers/{tid}").json()["status"] == "draft"


def move_pacs(world: World, port: int) -> None:
    """PACS_A's node row now says `port` (a free one: nothing answers there)."""
    engine = world.server.archive.engine
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.ae_title == "PACS_A")).one()
    store.update_node(engine, replace(store.node_facts(node), port=port))


def test_a_pacs_that_does_not_answer_is_a_502_and_a_fetch_tried_again_until_it_does(
    world: World,
) -> None:
    uids = [s.study_uid for s in world.on_pacs]
    move_pacs(world, free_port())
    down = _search(world)
    assert down.status_code == 502, down.text
    assert down.json()["error"].startswith("PACS_A at 127.0.0.1:")
    tid = _draft(world)
    picks = {"node": "PACS_A", "studies": uids, "send": True}
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", picks).status_code == 202
    world.worker.queue.retry_base_seconds = 0  # each run due at once, run one by one
    assert world.worker.run_once()
    waiting = world.get("a-sender", f"/transfers/{tid}").json()
    assert waiting["status"] == "draft" and waiting["studies"] == []
    assert waiting["history"][-1]["reason"].startswith("PACS_A could not be reached (PACS_A at")
    assert waiting["history"][-1]["reason"].endswith("Ferry tries again shortly (attempt 1 of 8)")
    [job] = JobQueue(world.server.archive.engine).list(kind="exchange.transfer-fetch")
    assert (job.status, job.attempts) == ("queued", 1)
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", picks).status_code == 409

    move_pacs(world, world.pacs.port)  # the PACS is back
    assert world.worker.run_once()
    sent = world.get("a-sender", f"/transfers/{tid}").json()
    assert sent["status"] == "on-worklist", sent["history"]
    assert {s["study_uid"] for s in sent["studies"]} == set(uids)
    assert _search(world).status_code == 200


def test_a_fetch_that_never_reaches_the_pacs_leaves_the_draft_unsent_and_says_why(
    world: World,
) -> None:
    uids = [s.study_uid for s in world.on_pacs]
    move_pacs(world, free_port())
    tid = _draft(world)
    picks = {"node": "PACS_A", "studies": uids, "send": True}
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", picks).status_code == 202
    world.worker.queue.retry_base_seconds = 0
    assert world.worker.run_until_idle() == 9  # eight runs of the fetch, then the email
    shown = world.get("a-sender", f"/transfers/{tid}").json()
    reasons = [h["reason"] for h in shown["history"]]
    assert sum("Ferry tries again shortly" in r for r in reasons) == 7
    assert reasons[-2].startswith("could not fetch 2 studies from PACS_A: PACS_A at")
    assert reasons[-1] == "not sent: 2 of 2 studies not fetched"
    assert shown["status"] == "draft" and shown["studies"] == []
    [job] = JobQueue(world.server.archive.engine).list(kind="exchange.transfer-fetch")
    assert (job.status, job.attempts) == ("parked", 8)
    [mail] = world.mail_to("a-sender")  # they started it ("own", the default)
    assert mail.subject == "[Ferry] Transfer to Riverside Practice (PRACTICE) not sent"
    assert (
        "could not fetch every study picked on a PACS of Hospital A (HOSPA)"
        in mail.texts()["text/plain"]
    )
    assert PATIENT not in mail.raw.decode()  # no patient data in an email
    assert world.mail_to("a-requester") == world.mail_to("practice-viewer") == []


def test_a_run_after_the_pacs_came_back_fetches_only_what_the_draft_lacks(world: World) -> None:
    first, second = (s.study_uid for s in world.on_pacs)
    tid = _draft(world)
    one = {"node": "PACS_A", "studies": [first], "send": False}
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", one).status_code == 202
    assert world.worker.run_until_idle() == 1
    move_pacs(world, free_port())
    both = {"node": "PACS_A", "studies": [first, second], "send": True}
    assert world.post("a-sender", f"/transfers/{tid}/node-studies", both).status_code == 202
    world.worker.queue.retry_base_seconds = 0
    assert world.worker.run_once()
    move_pacs(world, world.pacs.port)
    assert world.worker.run_once()
    sent = world.get("a-sender", f"/transfers/{tid}").json()
    assert sent["status"] == "on-worklist", sent["history"]
    fetched = [h["reason"] for h in sent["history"] if h["reason"].startswith("fetched")]
    assert fetched == [f"fetched {first} from PACS_A (1 of 1)",
                       f"fetched {second} from PACS_A (2 of 2)"]  # fmt: skip
    retrieved = world.audit(action="retrieve", outcome="allowed", study_uid=first)
    assert len(retrieved) == 1  # not fetched a second time
