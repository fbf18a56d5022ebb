"""Failed deliveries over the real HTTP API, on both databases: a delivery to a node that is
down fails and its job parks; the sending institution's administrator marks it delivered with
a reason ("deliver as sent"); the administrators of its institutions see and retry its job, and
the studies arrive once the node is up. Everyone else is refused, a job they may not see
answering like a missing one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlmodel import Session, select

from audit.search import AuditQuery, iter_events
from dimse.context import BridgeContext
from exchange.models import Transfer
from ferry.background import build_worker
from ferry.settings import Settings
from foundation.jobs import JobQueue, Worker
from policy import store
from tests import factories
from tests._peers import storescp
from tests.conftest import RunningServer, free_port, issue_token_for, make_settings
from tests.factories import StudySpec, write_series

PEOPLE = {
    "a-admin": {"A": "admin"},
    "a-sender": {"A": "sender,receiver,viewer"},
    "a-requester": {"A": "requester"},
    "b-admin": {"B": "admin"},
    "b-receiver": {"B": "receiver,viewer,sender"},
    "c-admin": {"C": "admin"},
}
INSTANCES = 3


@dataclass
class Parties:
    server: RunningServer
    http: httpx.Client
    tokens: dict[str, str]
    pks: dict[str, int]
    study: StudySpec
    worker: Worker
    node_port: int

    def call(self, who: str, method: str, path: str, body: object = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens[who]}"}
        return self.http.request(method, f"/api{path}", headers=headers, json=body)

    def failed_transfer(self) -> str:
        """A-sender sends the study to B's PACS, which is down: the job parks, it fails."""
        body = {"institution": "A", "destination": "B", "node": "PACS_B", "send": True,
                "studies": [self.study.study_uid]}  # fmt: skip
        made = self.call("a-sender", "POST", "/transfers", body)
        assert made.status_code == 201, made.text
        self.worker.run_until_idle()
        tid = str(made.json()["id"])
        assert self.status(tid) == "failed"
        return tid

    def status(self, tid: str) -> str:
        return str(self.call("a-sender", "GET", f"/transfers/{tid}").json()["status"])

    def row(self, tid: str) -> Transfer:
        with Session(self.server.archive.engine) as session:
            found = session.exec(select(Transfer).where(Transfer.public_id == tid)).one()
            session.expunge(found)
            return found


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """One attempt per delivery: a node that is down parks the job at once."""
    return make_settings(tmp_path, database_url, forward_max_attempts=1)


@pytest.fixture
def parties(server: RunningServer, tmp_path: Path) -> Iterator[Parties]:
    engine = server.archive.engine
    pks = {code: store.create_institution(engine, code, f"Institution {code}").pk or 0
           for code in ("A", "B", "C")}  # fmt: skip
    port = free_port()  # nothing listens here until a test starts the PACS
    pacs = factories.create_node(engine, pks["B"], "PACS_B", "127.0.0.1", port, can_write=True)
    store.create_destination_rule(engine, pks["B"], node_pk=pacs.pk, sender_institution_pk=pks["A"])
    tokens = {}
    for who, memberships in PEOPLE.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        for code, roles in memberships.items():
            store.set_membership(engine, user.pk or 0, pks[code], roles.split(","))
        tokens[who] = issue_token_for(server.app, server.archive, user.pk or 0)
    root = store.create_user(engine, "root@ferry.test", system_admin=True)
    tokens["root"] = issue_token_for(server.app, server.archive, root.pk or 0)
    robot = store.create_api_client(engine, "Reader", pks["A"], ["admin"])
    tokens["read-token"] = store.issue_api_token(engine, robot.pk or 0, ["read"], None).token
    spec = StudySpec(patient_id="PAT-F", accession_number="ACC-F", modality="CT")
    paths = write_series(tmp_path / "study", INSTANCES, spec=spec)
    assert all(o.stored for o in server.archive.store_files(paths, None, pks["A"]))
    worker = build_worker(BridgeContext(server.settings.dimse(), server.archive), server.settings)
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield Parties(server, http, tokens, pks, spec, worker, port)


# --- deliver as sent ------------------------------------------------------------------------


def test_the_senders_administrator_marks_a_failed_delivery_delivered_with_a_reason(
    parties: Parties,
) -> None:
    tid = parties.failed_transfer()
    path = f"/transfers/{tid}/mark-delivered"
    for body in ({}, {"reason": "   "}):
        refused = parties.call("a-admin", "POST", path, body)
        assert refused.status_code == 400, refused.text
        assert "how you know" in refused.text
    assert parties.status(tid) == "failed"
    why = "PACS_B shows all 3 images; the association dropped before the last answer"
    marked = parties.call("a-admin", "POST", path, {"reason": why})
    assert marked.status_code == 200, marked.text
    assert marked.json()["status"] == "delivered"
    last = marked.json()["history"][-1]
    assert (last["status"], last["actor"]) == ("delivered", "user:a-admin@ferry.test")
    assert why in last["reason"]
    assert parties.status(tid) == "delivered"  # the receiver's side too
    events = list(iter_events(parties.server.archive.engine, AuditQuery(transaction=tid)))
    [step] = [e for e in events if orjson.loads(e.detail).get("step") == "delivered-by-hand"]
    assert (step.actor, step.outcome, step.reason) == ("user:a-admin@ferry.test", "allowed", why)
    assert step.rule == "sender-administrator" and step.patient_id == "PAT-F"
    again = parties.call("a-admin", "POST", path, {"reason": why})
    assert again.status_code == 409  # only a failed or partial transfer


def test_marking_delivered_is_refused_to_everyone_else(parties: Parties) -> None:
    tid = parties.failed_transfer()
    path = f"/transfers/{tid}/mark-delivered"
    cases = [
        ("c-admin", 404),  # another institution's administrator: no such transfer
        ("a-sender", 403),  # a plain sender of the sending institution
        ("a-requester", 403),  # a request-only member
        ("b-receiver", 403),  # the receiving institution's member
        ("b-admin", 403),  # the receiving institution's administrator: the sender's to say
        ("read-token", 403),  # a read-only token of an administrators' API client
        ("root", 404),  # a system administrator who belongs to neither
    ]
    for who, status in cases:
        answer = parties.call(who, "POST", path, {"reason": "it is there"})
        assert answer.status_code == status, (who, answer.text)
    assert parties.status(tid) == "failed"
    denied = iter_events(
        parties.server.archive.engine, AuditQuery(transaction=tid, outcome="denied")
    )
    assert {e.actor for e in denied} >= {"user:a-sender@ferry.test", "user:b-admin@ferry.test"}
    with httpx.Client(base_url=parties.server.base_url) as http:
        anonymous = http.post(f"/api{path}", json={"reason": "x"})
    assert anonymous.status_code == 401


# --- parked jobs ----------------------------------------------------------------------------


def _parked(engine: Any, kind: str, payload: dict[str, Any]) -> int:
    queue = JobQueue(engine)
    queue.add(kind, payload, max_attempts=1)
    claimed = queue.claim(frozenset({kind}))
    assert claimed is not None
    queue.fail(claimed, "failed for the test")
    return claimed.pk


def _others(parties: Parties) -> tuple[int, int]:
    """A parked delivery of C's own transfer, and a parked job of nobody's (Ferry's own)."""
    engine = parties.server.archive.engine
    now = datetime.now(UTC)
    with Session(engine) as session:
        theirs = Transfer(
            study_instance_uid="1.2.3.9", sender_institution_pk=parties.pks["C"],
            destination_institution_pk=parties.pks["C"], status="failed", created_at=now,
            last_instance_at=now,
        )  # fmt: skip
        session.add(theirs)
        session.commit()
        session.refresh(theirs)
    c_job = _parked(engine, "forward-study", {"study_uid": "1.2.3.9", "transfer_pk": theirs.pk})
    nobodys = _parked(engine, "notify", {"event": "transfer-failed", "institution_pk": 0})
    return c_job, nobodys


def _jobs(parties: Parties, who: str, **query: str) -> list[dict[str, Any]]:
    answer = parties.http.get(
        "/api/jobs",
        params={"status": "parked", **query},
        headers={"authorization": f"Bearer {parties.tokens[who]}"},
    )
    assert answer.status_code == 200, (who, answer.text)
    jobs: list[dict[str, Any]] = answer.json()
    return jobs


def test_institution_administrators_see_and_retry_the_jobs_of_their_transfers(
    parties: Parties, tmp_path: Path
) -> None:
    tid = parties.failed_transfer()
    job = parties.row(tid).job_pk
    assert job is not None
    c_job, nobodys = _others(parties)
    for who in ("a-admin", "b-admin"):  # the sender's and the receiver's administrators
        [seen] = _jobs(parties, who)
        assert seen["pk"] == job and seen["kind"] == "forward-study"
        assert set(seen["payload"]) <= {"study_uid", "node_pk", "transfer_pk"}  # not who asked
    assert [j["pk"] for j in _jobs(parties, "a-admin", institution="A")] == [job]
    assert [j["pk"] for j in _jobs(parties, "c-admin")] == [c_job]
    everything = {j["pk"]: j for j in _jobs(parties, "root")}
    assert {job, c_job, nobodys} <= set(everything)
    assert everything[job]["payload"]["requested_by"] == "user:a-sender@ferry.test"
    with storescp(tmp_path / "pacs", parties.node_port, ae_title="PACS_B") as received:
        retried = parties.call("b-admin", "POST", f"/jobs/{job}/retry", {})
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued"
        parties.worker.run_until_idle()
        assert parties.status(tid) == "delivered"
        assert len(list(received.iterdir())) == INSTANCES
    again = parties.call("b-admin", "POST", f"/jobs/{job}/retry", {})
    assert again.status_code == 409  # only a parked job is retried


def test_jobs_are_refused_to_everyone_else(parties: Parties) -> None:
    tid = parties.failed_transfer()
    job = parties.row(tid).job_pk
    c_job, nobodys = _others(parties)
    for who in ("a-sender", "a-requester", "b-receiver", "read-token"):
        listed = parties.call(who, "GET", "/jobs")
        assert listed.status_code == 403, (who, listed.text)
    for who, query, status in (("a-admin", "C", 404), ("b-receiver", "B", 403)):
        answer = parties.call(who, "GET", f"/jobs?institution={query}")
        assert answer.status_code == status, (who, answer.text)
    cases = [
        ("c-admin", job),  # another institution's administrator
        ("a-admin", c_job),  # an administrator reaching beyond their institution
        ("a-admin", nobodys),  # Ferry's own job: a system administrator's
        ("a-admin", 999_999),  # missing: the same answer
        ("a-sender", job),  # a plain sender of the transfer's institution
        ("a-requester", job),
        ("b-receiver", job),  # the receiving institution's member
        ("read-token", job),  # a read-only token of an administrators' API client
    ]
    for who, pk in cases:
        answer = parties.call(who, "POST", f"/jobs/{pk}/retry", {})
        assert answer.status_code == 404, (who, pk, answer.text)
    queue = JobQueue(parties.server.archive.engine)
    for pk in (job, c_job, nobodys):
        stored = queue.get(pk or 0)
        assert stored is not None and stored.status == "parked"
    denied = iter_events(parties.server.archive.engine, AuditQuery(outcome="denied"))
    assert any(e.actor == "user:c-admin@ferry.test" and "job" in e.detail for e in denied)
