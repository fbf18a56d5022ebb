"""Transfers by people over the real HTTP API: institutions A (sender) and B (receiver)."""

from __future__ import annotations

import io
import subprocess
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlmodel import Session, select

from audit.search import AuditQuery, iter_events
from foundation.jobs import Job
from policy import store
from tests import factories
from tests.conftest import RunningServer, issue_token_for
from tests.factories import StudySpec, write_series

LONDON = ZoneInfo("Europe/London")
WEDNESDAY_10 = datetime(2026, 6, 10, 10, 0, tzinfo=LONDON)
SUNDAY_03 = datetime(2026, 6, 14, 3, 0, tzinfo=LONDON)


@dataclass
class World:
    server: RunningServer
    http: httpx.Client
    tokens: dict[str, str]
    pks: dict[str, int]
    studies: dict[str, StudySpec]
    files: dict[str, bytes]  # the sent files' bytes, by file name (SOP Instance UID)
    clock: list[datetime]

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(f"/api{path}", headers=self.as_(who), **kwargs)

    def post(self, who: str, path: str, body: object = None) -> httpx.Response:
        return self.http.post(f"/api{path}", headers=self.as_(who), json=body or {})

    def send(self, who: str = "a-sender", **fields: Any) -> httpx.Response:
        body = {"institution": "A", "destination": "B", **fields}
        body.setdefault("studies", [self.studies["one"].study_uid])
        return self.post(who, "/transfers", body)

    def audit(self, **criteria: Any) -> list[Any]:
        return list(iter_events(self.server.archive.engine, AuditQuery(**criteria)))


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Any:
    engine = server.archive.engine
    a = store.create_institution(engine, "A", "Hospital A", timezone="Europe/London").pk
    b = store.create_institution(engine, "B", "Clinic B", timezone="Europe/London").pk
    card = store.create_institution(engine, "B-CARD", "Cardiology", parent_pk=b).pk
    c = store.create_institution(engine, "C", "Elsewhere").pk
    assert a and b and card and c
    store.set_core_hours(engine, b, {1, 2, 3, 4, 5}, "08:00", "18:00")
    pacs = factories.create_node(engine, b, "PACS_B", "127.0.0.1", 11104, can_write=True).pk
    factories.create_node(engine, b, "VIEWER_B", "127.0.0.1", 11105, can_write=False)
    store.create_destination_rule(engine, b, sender_institution_pk=a)  # worklist, always
    store.create_destination_rule(engine, b, node_pk=pacs, sender_institution_pk=a, window="core")
    store.create_destination_rule(engine, card, sender_institution_pk=a)
    people = {
        "a-sender": {a: "sender,receiver"},
        "b-receiver": {b: "receiver,viewer"},
        "b-requester": {b: "requester"},
        "card-receiver": {card: "receiver"},
        "c-user": {c: "sender,receiver,viewer"},
    }
    tokens, pks = {}, {"A": a, "B": b, "B-CARD": card, "C": c, "PACS_B": pacs or 0}
    for who, memberships in people.items():
        user = store.create_user(engine, f"{who}@ferry.test")
        for institution_pk, roles in memberships.items():
            store.set_membership(engine, user.pk, institution_pk, roles)
        tokens[who] = issue_token_for(server.app, server.archive, user.pk)
    studies, files = {}, {}
    for name, patient, modality in (("one", "PAT-1", "CT"), ("two", "PAT-2", "MR")):
        spec = StudySpec(patient_id=patient, accession_number=f"ACC-{patient}", modality=modality)
        paths = write_series(tmp_path / name, 3, spec=spec)
        files.update({path.name: path.read_bytes() for path in paths})
        assert all(o.stored for o in server.archive.store_files(paths, None, a))
        studies[name] = spec
    clock = [WEDNESDAY_10]
    server.app.state.clock = lambda: clock[0]
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield World(server, http, tokens, pks, studies, files, clock)


def test_destinations_are_those_the_rules_allow_now(world: World) -> None:
    now = world.get("a-sender", "/destinations", params={"institution": "A"}).json()
    allowed = {(d["institution"], d["node"]) for d in now["allowed"]}
    assert allowed == {("B", None), ("B", "PACS_B"), ("B-CARD", None)}
    left = {(d["institution"], d["node"]): d["reason"] for d in now["left_out"]}
    assert "no write right" in left[("B", "VIEWER_B")]
    assert "no destination rule" in left[("C", None)]
    world.clock[0] = SUNDAY_03
    night = world.get("a-sender", "/destinations", params={"institution": "A"}).json()
    assert ("B", "PACS_B") not in {(d["institution"], d["node"]) for d in night["allowed"]}
    world.clock[0] = WEDNESDAY_10
    store.add_holiday(world.server.archive.engine, world.pks["B"], date(2026, 6, 10), "Fete")
    holiday = world.get("a-sender", "/destinations", params={"institution": "A"}).json()
    assert ("B", "PACS_B") in {(d["institution"], d["node"]) for d in holiday["left_out"]}
    refused = world.get("b-requester", "/destinations", params={"institution": "B"})
    assert refused.status_code == 403


def test_send_to_the_worklist_grants_and_both_sides_see_the_history(world: World) -> None:
    created = world.send(priority="urgent", note="please review", reports=[{"text": "Normal."}])
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["status"] == "draft" and not draft["id"].isdigit()
    assert world.get("b-receiver", f"/transfers/{draft['id']}").status_code == 404  # a draft
    sent = world.post("a-sender", f"/transfers/{draft['id']}/send")
    assert sent.status_code == 200, sent.text
    seen = world.get("b-receiver", f"/transfers/{draft['id']}").json()
    assert seen["status"] == "on-worklist" and seen["side"] == "receiver"
    assert [h["status"] for h in seen["history"]] == ["draft", "sent", "on-worklist"]
    assert seen["reports"] == [{"title": "", "text": "Normal."}]
    assert seen["studies"][0]["patient_id"] == "PAT-1"
    uid = world.studies["one"].study_uid
    qido = world.http.get(
        "/dicom-web/studies", params={"StudyInstanceUID": uid}, headers=world.as_("b-receiver")
    )
    assert qido.status_code == 200 and len(qido.json()) == 1  # granted
    [event] = world.audit(transaction=draft["id"], outcome="allowed", action="transfer")[:1]
    assert (event.patient_id, event.accession_number, event.study_uid) == (
        "PAT-1",
        "ACC-PAT-1",
        uid,
    )


def test_refusals_are_explained_and_audited(world: World) -> None:
    world.clock[0] = SUNDAY_03
    night = world.send(node="PACS_B", send=True)
    assert night.status_code == 403 and "no destination rule" in night.json()["error"]
    assert world.audit(action="transfer", outcome="denied")
    world.clock[0] = WEDNESDAY_10
    assert world.send("b-requester", institution="B", destination="A").status_code == 403
    transfer = world.send(send=True).json()
    tid = transfer["id"]
    for method, path in (("post", "viewer-link"), ("get", "download.zip")):
        refused = getattr(world.http, method)(
            f"/api/transfers/{tid}/{path}", headers=world.as_("b-requester"),
            **({"json": {}} if method == "post" else {}),
        )  # fmt: skip
        assert refused.status_code == 403, refused.text
    assert len(world.audit(transaction=tid, outcome="denied")) >= 2
    guessed = world.get("c-user", f"/transfers/{tid}")
    missing = world.get("c-user", "/transfers/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert guessed.status_code == missing.status_code == 404
    assert guessed.json()["error"].startswith("no transfer")
    assert world.audit(transaction=tid, actor="user:c-user@ferry.test", outcome="denied")
    unknown = world.send(studies=["1.2.3.4.5.6.7"])
    assert unknown.status_code == 400 and "no study" in unknown.json()["error"]
    empty = world.send(studies=[]).json()
    assert world.post("a-sender", f"/transfers/{empty['id']}/send").status_code == 400
    huge = world.send(note="x" * 1_000_000)
    assert huge.status_code == 413 and "at most" in huge.json()["error"]
    long = world.send(note="x" * 4001)
    assert long.status_code == 422 and "note" in long.json()["error"]


def _zip_of(world: World, tid: str, who: str = "b-receiver", **params: Any) -> httpx.Response:
    return world.http.get(
        f"/api/transfers/{tid}/download.zip", headers=world.as_(who), params=params
    )


def test_download_zip_is_byte_for_byte_with_a_dicomdir_then_cancel_is_refused(
    world: World, tmp_path: Path
) -> None:
    studies = [world.studies["one"].study_uid, world.studies["two"].study_uid]
    tid = world.send(studies=studies, send=True).json()["id"]
    response = _zip_of(world, tid)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names[-1] == "DICOMDIR"  # written once every file is out
        archive.extractall(tmp_path / "out")
    dicomdir = dcmread(tmp_path / "out" / "DICOMDIR")
    file_set = FileSet(dicomdir)  # pydicom finds every file the records name
    assert len(file_set) == 6
    assert {f"{i.SOPInstanceUID}.dcm" for i in file_set} <= set(world.files)
    dump = subprocess.run(
        ["dcmdump", "-q", str(tmp_path / "out" / "DICOMDIR")], capture_output=True, text=True
    )
    assert dump.returncode == 0 and dump.stdout.count('"Directory Record" IMAGE') == 6
    records = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    assert len(records) == 6
    originals = world.files
    for record in records:
        path = tmp_path / "out" / Path(*record.ReferencedFileID)
        uid = record.ReferencedSOPInstanceUIDInFile
        assert path.read_bytes() == originals[f"{uid}.dcm"]
    only = _zip_of(world, tid, study=studies[1])
    with zipfile.ZipFile(io.BytesIO(only.content)) as archive:
        assert len(archive.namelist()) == 4  # DICOMDIR and three instances
    shown = world.get("a-sender", f"/transfers/{tid}").json()
    assert shown["status"] == "downloaded"
    assert world.audit(transaction=tid, action="download", outcome="allowed")
    cancel = world.post("a-sender", f"/transfers/{tid}/cancel", {"reason": "wrong patient"})
    assert cancel.status_code == 409 and "downloaded" in cancel.json()["error"]
    assert world.audit(transaction=tid, action="transfer", outcome="denied")


def test_a_study_deleted_while_streaming_truncates_the_download(world: World) -> None:
    one, two = world.studies["one"].study_uid, world.studies["two"].study_uid
    tid = world.send(studies=[one, two], send=True).json()["id"]
    archive = world.server.archive
    # Deleting removes the blobs, then the rows: a stream that planned the ZIP from the rows
    # meets the missing blobs halfway, after the first study has gone out.
    archive.blobs.delete(i.blob_key for i in archive.find_instances(two))
    received = bytearray()
    with world.http.stream(
        "GET", f"/api/transfers/{tid}/download.zip", headers=world.as_("b-receiver")
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):
            for chunk in response.iter_raw():
                received += chunk
    assert received.startswith(b"PK")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(bytes(received)))
    assert world.audit(transaction=tid, action="download", outcome="failed")


def test_cancel_return_and_resend(world: World) -> None:
    tid = world.send(send=True).json()["id"]
    cancelled = world.post("a-sender", f"/transfers/{tid}/cancel", {"reason": "sent too soon"})
    assert cancelled.json()["status"] == "cancelled"
    uid = world.studies["one"].study_uid
    qido = world.http.get(
        "/dicom-web/studies", params={"StudyInstanceUID": uid}, headers=world.as_("b-receiver")
    )
    assert qido.json() == [] or qido.status_code == 204  # the grant is revoked
    other = world.send(send=True).json()["id"]
    assert world.post("b-receiver", f"/transfers/{other}/return", {"reason": ""}).status_code == 422
    returned = world.post("b-receiver", f"/transfers/{other}/return", {"reason": "not ours"})
    assert returned.json()["status"] == "returned"
    assert (
        world.get("a-sender", f"/transfers/{other}").json()["history"][-1]["reason"] == "not ours"
    )
    assert world.post("a-sender", f"/transfers/{other}/resend").status_code == 409


def test_viewer_link_token_reads_only_its_study(world: World) -> None:
    tid = world.send(studies=[world.studies["one"].study_uid], send=True).json()["id"]
    link = world.post("b-receiver", f"/transfers/{tid}/viewer-link")
    assert link.status_code == 200, link.text
    url = httpx.URL(link.json()["url"])
    assert url.path == "/viewer/viewer"
    token = url.params["token"]
    limited = {"authorization": f"Bearer {token}"}
    one, two = world.studies["one"].study_uid, world.studies["two"].study_uid
    assert world.http.get(f"/dicom-web/studies/{one}/metadata", headers=limited).status_code == 200
    assert world.http.get(f"/dicom-web/studies/{two}/metadata", headers=limited).status_code == 404
    found = world.http.get("/dicom-web/studies", headers=limited).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [one]
    assert (
        world.http.get("/api/worklist", params={"institution": "B"}, headers=limited).status_code
        == 403
    )
    assert world.get("b-receiver", f"/transfers/{tid}").json()["status"] == "viewed"
    assert world.audit(transaction=tid, action="view", outcome="allowed")


def test_worklist_filters_sorts_pages_urgent_first(world: World) -> None:
    one, two = world.studies["one"].study_uid, world.studies["two"].study_uid
    routine = world.send(studies=[one], send=True).json()["id"]
    world.clock[0] = WEDNESDAY_10 + timedelta(hours=1)
    urgent = world.send(studies=[two], priority="urgent", send=True).json()["id"]
    to_card = world.send(destination="B-CARD", studies=[one], send=True).json()["id"]
    page = world.get("b-receiver", "/worklist", params={"institution": "B"}).json()
    assert [i["id"] for i in page["items"]] == [urgent, routine] and page["total"] == 2
    card = world.get("card-receiver", "/worklist", params={"institution": "B-CARD"}).json()
    assert [i["id"] for i in card["items"]] == [to_card]
    for params, expected in (
        ({"modality": "MR"}, [urgent]),
        ({"patient_id": "PAT-1"}, [routine]),
        ({"accession": "ACC-PAT-2"}, [urgent]),
        ({"priority": "routine"}, [routine]),
        ({"sender": "A", "limit": 1, "offset": 1}, [routine]),
        ({"status": "returned"}, []),
        ({"patient_name": "ferry^t"}, [urgent, routine]),  # a prefix, any case
        ({"patient_name": "Nobody"}, []),
        ({"study_date_from": "20240101", "study_date_to": "20241231"}, [urgent, routine]),
        ({"study_date_to": "20231231"}, []),
        ({"arrived_from": (WEDNESDAY_10 + timedelta(minutes=30)).isoformat()}, [urgent]),
        ({"arrived_to": (WEDNESDAY_10 + timedelta(minutes=30)).isoformat()}, [routine]),
        ({"sort": "created", "order": "asc", "priority": "routine"}, [routine]),
    ):
        found = world.get("b-receiver", "/worklist", params={"institution": "B", **params})
        assert [i["id"] for i in found.json()["items"]] == expected, params
    done = world.post("b-receiver", f"/transfers/{routine}/done")
    assert done.json()["done_at"] is not None
    open_only = world.get(
        "b-receiver", "/worklist", params={"institution": "B", "include_done": "false"}
    )
    assert [i["id"] for i in open_only.json()["items"]] == [urgent]
    assert world.get("c-user", "/worklist", params={"institution": "B"}).status_code == 404


def test_node_transfers_and_downloads_to_a_node_queue_forwarding_jobs(world: World) -> None:
    sent = world.send(node="PACS_B", send=True).json()
    assert sent["status"] == "delivering" and sent["node"] == "PACS_B"
    two = world.studies["two"]
    both = [world.studies["one"].study_uid, two.study_uid]
    delivered = world.send(studies=both, send=True).json()["id"]
    deliver = world.post("b-receiver", f"/transfers/{delivered}/deliver", {"node": "PACS_B"})
    assert deliver.json()["status"] == "delivering", deliver.text
    with Session(world.server.archive.engine) as session:
        jobs = list(session.exec(select(Job).where(Job.kind == "forward-study")))
    payloads = [orjson.loads(job.payload) for job in jobs]
    assert {p["node_pk"] for p in payloads} == {world.pks["PACS_B"]}
    assert len(payloads) == 3
    from exchange.transfers import mark_delivery

    last = payloads[2]
    assert last["study_uid"] == two.study_uid
    mark_delivery(world.server.archive.engine, last["transfer_pk"], "failed", "parked",
                  WEDNESDAY_10, last["study_uid"])  # fmt: skip
    failed = world.get("b-receiver", f"/transfers/{delivered}").json()
    assert failed["status"] == "failed" and failed["history"][-1]["actor"] == "ferry"
    [event] = world.audit(transaction=delivered, action="transfer", outcome="failed")
    assert (event.study_uid, event.patient_id) == (two.study_uid, "PAT-2")  # the job's study
    refused = world.post("b-receiver", f"/transfers/{delivered}/deliver", {"node": "VIEWER_B"})
    assert refused.status_code == 400
    again = world.post("b-receiver", f"/transfers/{delivered}/deliver",
                       {"node": "PACS_B", "studies": [two.study_uid]})  # fmt: skip
    assert again.status_code == 200, again.text
    with Session(world.server.archive.engine) as session:
        jobs = list(session.exec(select(Job).where(Job.kind == "forward-study")))
    assert [orjson.loads(job.payload)["study_uid"] for job in jobs[3:]] == [two.study_uid]
    stranger = world.post("b-receiver", f"/transfers/{delivered}/deliver",
                          {"node": "PACS_B", "studies": ["1.2.3.4"]})  # fmt: skip
    assert stranger.status_code == 404 and "holds no study" in stranger.json()["error"]


def test_upload_and_send_through_stow(world: World, tmp_path: Path) -> None:
    draft = world.send(studies=[]).json()["id"]
    spec = StudySpec(patient_id="PAT-UP")
    parts = [p.read_bytes() for p in write_series(tmp_path / "up", 2, spec=spec)]
    boundary = "ferryboundary"
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
            for p in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    headers = {
        **world.as_("a-sender"),
        "content-type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    stored = world.http.post(
        "/dicom-web/studies", params={"transfer": draft, "institution": "A"}, content=body,
        headers=headers,
    )  # fmt: skip
    assert stored.status_code == 200, stored.text
    sent = world.post("a-sender", f"/transfers/{draft}/send").json()
    assert sent["status"] == "on-worklist"
    assert [s["patient_id"] for s in sent["studies"]] == ["PAT-UP"]
    stranger = world.http.post(
        "/dicom-web/studies", params={"transfer": draft}, content=body,
        headers={**headers, **world.as_("c-user")},
    )  # fmt: skip
    assert stranger.status_code == 404


def test_a_study_received_earlier_is_sent_on(world: World) -> None:
    engine, uid = world.server.archive.engine, world.studies["one"].study_uid
    store.create_destination_rule(engine, world.pks["C"], sender_institution_pk=world.pks["B"])
    user = store.create_user(engine, "b-sender@ferry.test")
    store.set_membership(engine, user.pk, world.pks["B"], "sender")
    world.tokens["b-sender"] = issue_token_for(world.server.app, world.server.archive, user.pk)
    onward = {"institution": "B", "destination": "C", "studies": [uid], "send": True}
    before = world.post("b-sender", "/transfers", onward)
    assert before.status_code == 400 and "that you may see" in before.json()["error"]
    assert world.send(send=True).status_code == 201  # A sends it to B
    sent = world.post("b-sender", "/transfers", onward)
    assert sent.status_code == 201 and sent.json()["status"] == "on-worklist", sent.text
    [item] = world.get("c-user", "/worklist", params={"institution": "C"}).json()["items"]
    assert item["id"] == sent.json()["id"] and item["studies"][0]["study_uid"] == uid
    zipped = world.http.get(f"/api/transfers/{item['id']}/download.zip",
                            headers=world.as_("c-user"))  # fmt: skip
    assert zipped.status_code == 200
