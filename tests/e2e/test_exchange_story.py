"""Issue 11's first story, end to end over the real API and real peers.

Hospital A sends a study to clinic B's worklist; B hears of it by email (a real SMTP server),
views it (the viewer token opens that study and no other), downloads it as a ZIP (compared byte
for byte with what A sent) and to its PACS (DCMTK's storescp), reconciled against its RIS (a
pynetdicom MWL SCP); A sees "delivered" and "downloaded", with times.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import orjson
from pydicom import dcmread

from audit.search import AuditQuery, iter_events
from dimse.context import BridgeContext
from ferry.background import build_worker
from ferry.settings import replace_settings
from policy import store
from tests import factories
from tests._peers import storescp
from tests.conftest import RunningServer, free_port, issue_token_for
from tests.dimse.test_forward import worklist_peer
from tests.exchange._smtp import smtp_server
from tests.factories import StudySpec, write_series


def test_a_sends_b_views_downloads_and_delivers_to_its_reconciled_pacs(
    server: RunningServer, tmp_path: Path
) -> None:
    engine, archive = server.archive.engine, server.archive
    a = store.create_institution(engine, "A", "Hospital A").pk
    b = store.create_institution(engine, "B", "Clinic B").pk
    assert a and b
    store.create_destination_rule(engine, b, sender_institution_pk=a)
    tokens = {}
    for who, institution, roles in (
        ("a-sender", a, "sender"),
        ("b-receiver", b, "receiver,viewer"),
    ):
        user = store.create_user(engine, f"{who}@ferry.test")
        store.set_membership(engine, user.pk, institution, roles)
        tokens[who] = {"authorization": f"Bearer {issue_token_for(server.app, archive, user.pk)}"}
    sent_spec = StudySpec(patient_id="A-PAT-1", accession_number="ORDER-7")
    paths = write_series(tmp_path / "a", 3, spec=sent_spec)
    originals = {path.name: path.read_bytes() for path in paths}
    assert all(o.stored for o in archive.store_files(paths, None, a))
    other = StudySpec(patient_id="A-PAT-2").new_study()
    assert all(o.stored for o in archive.store_files(write_series(tmp_path / "o", 1, spec=other),
                                                      None, a))  # fmt: skip
    pacs_port = free_port()
    with (
        smtp_server() as smtp,
        worklist_peer("ORDER-7") as ris_port,
        storescp(tmp_path / "pacs", pacs_port, ae_title="PACS_B") as received,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        ris = factories.create_node(engine, b, "RIS_B", "127.0.0.1", ris_port, worklist=True).pk
        factories.create_node(engine, b, "PACS_B", "127.0.0.1", pacs_port, can_write=True,
                          reconcile_with_pk=ris)  # fmt: skip
        settings = replace_settings(
            server.settings, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False,
            mail_from="Ferry <ferry@ferry.test>",
        )  # fmt: skip
        worker = build_worker(BridgeContext(settings.dimse(), archive), settings)

        body = {"institution": "A", "destination": "B", "studies": [sent_spec.study_uid],
                "priority": "urgent", "note": "compare with priors", "send": True}  # fmt: skip
        wants_all = http.put("/api/me/notifications", json={"choice": "all"},
                             headers=tokens["b-receiver"])  # fmt: skip
        assert wants_all.status_code == 200, wants_all.text
        made = http.post("/api/transfers", json=body, headers=tokens["a-sender"])
        assert made.status_code == 201, made.text
        tid = made.json()["id"]
        assert made.json()["status"] == "on-worklist"
        worker.run_until_idle()
        [mail] = smtp.mailbox.to("b-receiver@ferry.test")
        assert "Transfer arrived at Clinic B" in mail.subject and "A-PAT-1" not in mail.raw.decode()

        link = http.post(f"/api/transfers/{tid}/viewer-link", json={}, headers=tokens["b-receiver"])
        limited = {"authorization": f"Bearer {httpx.URL(link.json()['url']).params['token']}"}
        mine = http.get(f"/dicom-web/studies/{sent_spec.study_uid}/metadata", headers=limited)
        theirs = http.get(f"/dicom-web/studies/{other.study_uid}/metadata", headers=limited)
        assert (mine.status_code, theirs.status_code) == (200, 404)

        download = http.get(f"/api/transfers/{tid}/download.zip", headers=tokens["b-receiver"])
        with zipfile.ZipFile(io.BytesIO(download.content)) as zipped:
            members = {name: zipped.read(name) for name in zipped.namelist()}
        files = {dcmread(io.BytesIO(data)).SOPInstanceUID: data for name, data in members.items()
                 if name != "DICOMDIR"}  # fmt: skip
        assert {f"{uid}.dcm": data for uid, data in files.items()} == originals

        deliver = http.post(f"/api/transfers/{tid}/deliver", json={"node": "PACS_B"},
                            headers=tokens["b-receiver"])  # fmt: skip
        assert deliver.status_code == 200, deliver.text
        worker.run_until_idle()
        stored = [dcmread(path) for path in received.iterdir()]
        assert len(stored) == 3
        assert {ds.PatientID for ds in stored} == {"LOCAL-42"}  # B's RIS's own identifiers

        seen = http.get(f"/api/transfers/{tid}", headers=tokens["a-sender"]).json()
        assert seen["status"] == "delivered"
        steps = {change["status"]: change["at"] for change in seen["history"]}
        assert {"on-worklist", "viewed", "downloaded", "delivering", "delivered"} <= set(steps)
        assert all(steps.values())

    # Every step, by people and by Ferry, is found by the transfer's id and names the patient.
    story = list(iter_events(engine, AuditQuery(transaction=tid)))
    kinds = {(e.action, e.outcome, orjson.loads(e.detail).get("status")) for e in story}
    assert {("view", "allowed"), ("download", "allowed"), ("forward", "allowed")} <= {
        (action, outcome) for action, outcome, _ in kinds
    }
    assert {"draft", "on-worklist", "delivered"} <= {status for _, _, status in kinds}
    for event in story:
        facts = (event.patient_id, event.accession_number, event.study_uid)
        assert facts == ("A-PAT-1", "ORDER-7", sent_spec.study_uid), (event.action, facts)
    assert story == list(iter_events(engine, AuditQuery(patient_id="A-PAT-1", transaction=tid)))
