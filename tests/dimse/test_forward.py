"""Forwarding jobs against real peers: DCMTK's storescp and pynetdicom storage SCPs.

Each test stores a small generated study, queues its delivery to a node and runs a real job
worker; what the peer received (files on disk, SOP Instance UIDs, pixels) is the evidence.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityWorklistInformationFind,
    SecondaryCaptureImageStorage,
)
from sqlalchemy import select
from sqlmodel import Session

from archive.store import Archive
from audit.models import AuditEvent
from dimse.context import BridgeContext
from dimse.forward import FORWARD_STUDY, enqueue_forward, forward_handler
from dimse.models import ForwardedInstance
from exchange.models import Transfer, TransferStatus
from ferry.app import build_archive
from ferry.settings import Settings
from foundation.jobs import Job, JobStatus, Worker
from policy.models import Node
from tests._peers import dcmtk_peer, start_scp
from tests.conftest import free_port, make_settings
from tests.dimse.conftest import Clock, dcmtk
from tests.factories import StudySpec, ct_slice, jpeg_baseline, part10_bytes
from tests.policy._people import add_institution

RETRY_SECONDS = 10
WAIT = 60.0  # seconds for what should take well under one


@dataclass
class Forwarding:
    """An archive with one institution, its nodes, a movable clock and a forwarding worker."""

    context: BridgeContext
    clock: Clock
    institution_pk: int
    folder: Path
    settings: Settings

    @property
    def archive(self) -> Archive:
        return self.context.archive

    def add_node(self, ae_title: str, port: int, **values: Any) -> int:
        with Session(self.archive.engine) as session:
            node = Node(
                institution_pk=self.institution_pk,
                ae_title=ae_title,
                host="127.0.0.1",
                port=port,
                **({"can_write": True} | values),
            )
            session.add(node)
            session.commit()
            assert node.pk is not None
            return node.pk

    def store(self, datasets: list[Dataset]) -> str:
        incoming = self.folder / "incoming"
        incoming.mkdir(exist_ok=True)
        paths = []
        for ds in datasets:
            path = incoming / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(part10_bytes(ds))
            paths.append(path)
        outcomes = self.archive.store_files(paths, institution_pk=self.institution_pk)
        assert all(outcome.stored for outcome in outcomes), outcomes
        return str(datasets[0].StudyInstanceUID)

    def enqueue(
        self, study_uid: str, node_pk: int, max_attempts: int = 8, transfer_pk: int | None = None
    ) -> int:
        with self.archive.engine.begin() as connection:
            return enqueue_forward(
                connection,
                study_uid=study_uid,
                node_pk=node_pk,
                now=self.clock(),
                transfer_pk=transfer_pk,
                requested_by="tester@ferry.test",
                max_attempts=max_attempts,
            )

    def add_transfer(self, study_uid: str, node_pk: int) -> int:
        """A transfer being delivered to one of this institution's own nodes."""
        with Session(self.archive.engine) as session:
            transfer = Transfer(
                study_instance_uid=study_uid,
                sender_institution_pk=self.institution_pk,
                destination_institution_pk=self.institution_pk,
                destination_node_pk=node_pk,
                status=TransferStatus.DELIVERING.value,
                created_at=self.clock(),
                last_instance_at=self.clock(),
            )
            session.add(transfer)
            session.commit()
            assert transfer.pk is not None
            return transfer.pk

    def transfer(self, pk: int) -> tuple[str, str]:
        with Session(self.archive.engine) as session:
            transfer = session.get(Transfer, pk)
            assert transfer is not None
            return transfer.status, transfer.reason

    def run_jobs(self) -> int:
        worker = Worker(self.context.jobs, {FORWARD_STUDY: forward_handler(self.context)})
        return worker.run_until_idle()

    def job(self, pk: int) -> Job:
        job = self.context.jobs.get(pk)
        assert job is not None
        return job

    def answers(self, job_pk: int) -> dict[str, int]:
        with Session(self.archive.engine) as session:
            rows = session.exec(
                select(ForwardedInstance).where(ForwardedInstance.job_pk == job_pk)  # type: ignore[arg-type]
            ).all()
        return {row[0].sop_instance_uid: row[0].status for row in rows}

    def forward_events(self) -> list[AuditEvent]:
        with Session(self.archive.engine) as session:
            rows = session.exec(
                select(AuditEvent).where(AuditEvent.action == "forward").order_by(AuditEvent.pk)  # type: ignore[arg-type]
            ).all()
        return [row[0] for row in rows]


def _forwarding(tmp_path: Path, url: str) -> Iterator[Forwarding]:
    settings = make_settings(tmp_path, url, forward_retry_seconds=RETRY_SECONDS, dicom_port=0)
    archive = build_archive(settings)
    clock = Clock(datetime.now(UTC))
    try:
        institution_pk = add_institution(archive.engine, "HOSP")
        context = BridgeContext(settings.dimse(), archive, clock)
        yield Forwarding(context, clock, institution_pk, tmp_path, settings)
    finally:
        archive.engine.dispose()


@pytest.fixture
def forwarding(tmp_path: Path, database_url: str) -> Iterator[Forwarding]:
    """On SQLite and PostgreSQL: where the per-instance bookkeeping matters."""
    yield from _forwarding(tmp_path, database_url)


@pytest.fixture
def on_sqlite(tmp_path: Path) -> Iterator[Forwarding]:
    yield from _forwarding(tmp_path, f"sqlite:///{tmp_path / 'index.db'}")


def mixed_study(ct_count: int = 3) -> list[Dataset]:
    """CT slices as uncompressed and one JPEG Baseline secondary capture, in one study."""
    spec = StudySpec()
    slices = [ct_slice(spec=replace(spec, instance_number=n)) for n in range(1, ct_count + 1)]
    return [*slices, jpeg_baseline(spec=spec.new_series(2))]


@contextmanager
def storescp(folder: Path, port: int, *options: str) -> Iterator[Path]:
    """DCMTK's storescp writing what it receives to `folder` (Nagle off, stopped afterwards)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [dcmtk("storescp"), "-aet", "PACS1", "-od", str(folder), *options, str(port)]
    with dcmtk_peer("storescp", *command[1:], port=port, ae_title="PACS1"):
        yield folder


def received_files(folder: Path) -> dict[str, Dataset]:
    found = [dcmread(path) for path in folder.iterdir() if path.is_file()]
    return {str(ds.SOPInstanceUID): ds for ds in found}


@dataclass
class StoragePeer:
    """A pynetdicom storage SCP: refuses some instances, may hold one answer back."""

    port: int
    refuse: set[str] = field(default_factory=set)
    hold_at: int = 0  # hold the answer to this many-th instance until `release` is set
    received: list[str] = field(default_factory=list)
    patient_ids: dict[str, str] = field(default_factory=dict)
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def on_store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.received.append(uid)
        self.patient_ids[uid] = str(event.dataset.PatientID)
        if self.hold_at and len(self.received) == self.hold_at:
            self.holding.set()
            self.release.wait(WAIT)
        return 0xA700 if uid in self.refuse else 0x0000  # Refused: Out of Resources


@contextmanager
def storage_peer(**options: Any) -> Iterator[StoragePeer]:
    peer = StoragePeer(free_port(), **options)
    ae = AE("PEER")
    explicit_first = [ExplicitVRLittleEndian, *ALL_TRANSFER_SYNTAXES]  # as storescp prefers
    for sop_class in (CTImageStorage, SecondaryCaptureImageStorage):
        ae.add_supported_context(sop_class, list(dict.fromkeys(explicit_first)))
    server = start_scp(ae, peer.port, [(evt.EVT_C_STORE, peer.on_store)])
    try:
        yield peer
    finally:
        peer.release.set()
        server.shutdown()


def stored_pixels(archive: Archive, sop_instance_uid: str, study_uid: str) -> Dataset:
    (instance,) = archive.find_instances(study_uid, instance=sop_instance_uid)
    with archive.blobs.open(instance.blob_key) as blob:
        return dcmread(blob)


# -- delivery ---------------------------------------------------------------------------


def test_a_study_reaches_the_node_as_stored(forwarding: Forwarding, tmp_path: Path) -> None:
    datasets = mixed_study()
    study_uid = forwarding.store(datasets)
    port = free_port()
    with storescp(tmp_path / "pacs1", port, "+xa") as folder:
        node_pk = forwarding.add_node("PACS1", port)
        transfer_pk = forwarding.add_transfer(study_uid, node_pk)
        job_pk = forwarding.enqueue(study_uid, node_pk, transfer_pk=transfer_pk)
        assert forwarding.run_jobs() == 1
    job = forwarding.job(job_pk)
    assert (job.status, job.result) == (JobStatus.DONE, "sent 4 of 4 to PACS1")
    assert forwarding.transfer(transfer_pk) == ("delivered", "sent 4 of 4 to PACS1")

    received = received_files(folder)
    assert set(received) == {str(ds.SOPInstanceUID) for ds in datasets}
    for original in datasets:
        copy = received[str(original.SOPInstanceUID)]
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.PixelData == original.PixelData  # the JPEG went as stored, byte for byte
    assert set(forwarding.answers(job_pk).values()) == {0x0000}

    (event,) = forwarding.forward_events()
    assert (event.actor, event.outcome, event.study_uid) == ("ferry", "allowed", study_uid)
    assert (event.patient_id, event.accession_number) == ("FERRY-0001", "ACC0001")
    detail = json.loads(event.detail)
    assert (detail["node"], detail["sent"], detail["failed"], detail["job_pk"]) == (
        "PACS1",
        4,
        0,
        job_pk,
    )


def test_a_node_taking_only_uncompressed_gets_the_jpeg_decompressed(
    on_sqlite: Forwarding, tmp_path: Path
) -> None:
    datasets = mixed_study(ct_count=1)
    study_uid = on_sqlite.store(datasets)
    port = free_port()
    with storescp(tmp_path / "pacs1", port) as folder:  # storescp's default: uncompressed only
        job_pk = on_sqlite.enqueue(study_uid, on_sqlite.add_node("PACS1", port))
        assert on_sqlite.run_jobs() == 1
    assert on_sqlite.job(job_pk).result == (
        f"sent 2 of 2 to PACS1 (1 transcoded to {ExplicitVRLittleEndian})"
    )
    jpeg = datasets[-1]
    copy = received_files(folder)[str(jpeg.SOPInstanceUID)]
    assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    stored = stored_pixels(on_sqlite.archive, str(jpeg.SOPInstanceUID), study_uid)
    assert (copy.pixel_array == stored.pixel_array).all()


# -- failures, retries, parking ----------------------------------------------------------


def test_an_unreachable_node_is_retried_with_backoff_parked_and_sent_after_retry(
    on_sqlite: Forwarding, tmp_path: Path
) -> None:
    study_uid = on_sqlite.store(mixed_study(ct_count=1))
    port = free_port()  # nothing listens there yet
    node_pk = on_sqlite.add_node("PACS1", port)
    transfer_pk = on_sqlite.add_transfer(study_uid, node_pk)
    job_pk = on_sqlite.enqueue(study_uid, node_pk, max_attempts=3, transfer_pk=transfer_pk)
    for attempt, delay in ((1, RETRY_SECONDS), (2, 2 * RETRY_SECONDS)):
        assert on_sqlite.run_jobs() == 1
        job = on_sqlite.job(job_pk)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, attempt)
        assert "PACS1 at 127.0.0.1" in job.last_error
        assert job.run_after == on_sqlite.clock() + timedelta(seconds=delay)
        assert on_sqlite.run_jobs() == 0  # waits for its backoff
        assert on_sqlite.transfer(transfer_pk)[0] == "delivering"
        on_sqlite.clock.advance(seconds=delay)
    assert on_sqlite.run_jobs() == 1
    assert on_sqlite.job(job_pk).status == JobStatus.PARKED
    events = on_sqlite.forward_events()
    assert [event.outcome for event in events] == ["failed"] * 3
    assert [json.loads(event.detail)["parked"] for event in events] == [False, False, True]
    assert "parked after 3 attempts" in events[-1].reason
    status, reason = on_sqlite.transfer(transfer_pk)
    assert status == "failed" and "PACS1 at 127.0.0.1" in reason and "parked" in reason

    with storescp(tmp_path / "pacs1", port, "+xa") as folder:
        assert on_sqlite.context.jobs.retry(job_pk)
        assert on_sqlite.run_jobs() == 1
    job = on_sqlite.job(job_pk)
    assert (job.status, job.result) == (JobStatus.DONE, "sent 2 of 2 to PACS1")
    assert len(received_files(folder)) == 2
    assert on_sqlite.forward_events()[-1].outcome == "allowed"
    assert on_sqlite.transfer(transfer_pk)[0] == "delivered"


def test_a_refused_instance_fails_the_run_and_only_it_is_sent_again(
    forwarding: Forwarding,
) -> None:
    datasets = mixed_study(ct_count=3)
    study_uid = forwarding.store(datasets)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    refused = uids[1]
    with storage_peer(refuse={refused}) as peer:
        node_pk = forwarding.add_node("PEER", peer.port)
        transfer_pk = forwarding.add_transfer(study_uid, node_pk)
        job_pk = forwarding.enqueue(study_uid, node_pk, transfer_pk=transfer_pk)
        assert forwarding.run_jobs() == 1
        job = forwarding.job(job_pk)
        assert job.status == JobStatus.QUEUED
        status, reason = forwarding.transfer(transfer_pk)
        assert status == "partial" and "1 refused by the node (0xA700 x1)" in reason
        assert "sent 3 of 4 to PEER" in job.last_error
        assert "1 refused by the node (0xA700 x1)" in job.last_error
        assert forwarding.answers(job_pk) == {uid: 0xA700 if uid == refused else 0 for uid in uids}
        assert Counter(peer.received) == Counter(uids)

        peer.refuse.clear()
        forwarding.clock.advance(seconds=RETRY_SECONDS)
        assert forwarding.run_jobs() == 1
        assert peer.received[len(uids) :] == [refused]  # the second run sent only that one
    job = forwarding.job(job_pk)
    assert (job.status, job.result) == (
        JobStatus.DONE,
        "sent 4 of 4 to PEER (3 in earlier attempts)",
    )
    assert set(forwarding.answers(job_pk).values()) == {0}
    assert forwarding.transfer(transfer_pk)[0] == "delivered"
    failed, delivered = forwarding.forward_events()
    assert (failed.outcome, json.loads(failed.detail)["failed"]) == ("failed", 1)
    assert (delivered.outcome, json.loads(delivered.detail)["sent"]) == ("allowed", 1)


def test_what_cannot_be_delivered_at_all_is_parked_at_once(on_sqlite: Forwarding) -> None:
    study_uid = on_sqlite.store(mixed_study(ct_count=1))
    reader = on_sqlite.add_node("READONLY", free_port(), can_write=False)
    no_right = on_sqlite.enqueue(study_uid, reader)
    no_node = on_sqlite.enqueue(study_uid, 987654)
    writer = on_sqlite.add_node("PACS1", free_port())
    no_study = on_sqlite.enqueue("1.2.826.0.1.3680043.8.498.999", writer)
    assert on_sqlite.run_jobs() == 3
    reasons = {pk: on_sqlite.job(pk) for pk in (no_right, no_node, no_study)}
    assert {job.status for job in reasons.values()} == {JobStatus.PARKED}
    assert {job.attempts for job in reasons.values()} == {1}
    assert "READONLY may not receive studies" in reasons[no_right].last_error
    assert "node 987654 no longer exists" in reasons[no_node].last_error
    assert "is no longer in the archive" in reasons[no_study].last_error
    assert [event.outcome for event in on_sqlite.forward_events()] == ["failed"] * 3


# -- worklist reconciliation ------------------------------------------------------------


def local_order(accession_number: str) -> Dataset:
    """The destination RIS's order: its own patient id and accession number."""
    order = Dataset()
    order.PatientName = "Local^Name"
    order.PatientID = "LOCAL-42"
    order.IssuerOfPatientID = "STMARY"
    order.PatientBirthDate = "19700101"
    order.PatientSex = "O"
    order.AccessionNumber = accession_number
    step = Dataset()
    step.Modality = "CT"
    order.ScheduledProcedureStepSequence = [step]
    return order


@contextmanager
def worklist_peer(accession_number: str) -> Iterator[int]:
    """A pynetdicom MWL SCP that knows one order, found by its accession number only."""

    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        if event.identifier.get("AccessionNumber") == accession_number:
            yield 0xFF00, local_order(accession_number)

    port = free_port()
    ae = AE("RIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = start_scp(ae, port, [(evt.EVT_C_FIND, on_find)])
    try:
        yield port
    finally:
        server.shutdown()


def test_a_node_with_a_worklist_gets_local_ids_or_waits_for_a_person(
    on_sqlite: Forwarding,
) -> None:
    matched = on_sqlite.store(
        [ct_slice(spec=StudySpec(accession_number="ORDERED", patient_id="SENDER-1"))]
    )
    unmatched = on_sqlite.store(
        [ct_slice(spec=StudySpec(accession_number="UNKNOWN", patient_id="SENDER-2"))]
    )
    with worklist_peer("ORDERED") as ris_port, storage_peer() as peer:
        ris = on_sqlite.add_node("RIS", ris_port, worklist=True, can_write=False)
        node_pk = on_sqlite.add_node("PEER", peer.port, reconcile_with_pk=ris)
        transfers = {uid: on_sqlite.add_transfer(uid, node_pk) for uid in (matched, unmatched)}
        jobs = {
            uid: on_sqlite.enqueue(uid, node_pk, transfer_pk=transfers[uid]) for uid in transfers
        }
        assert on_sqlite.run_jobs() == 2
        assert on_sqlite.job(jobs[matched]).status == JobStatus.DONE
        assert list(peer.patient_ids.values()) == ["LOCAL-42"]  # only the matched study went
        assert on_sqlite.transfer(transfers[matched])[0] == "delivered"

        parked = on_sqlite.job(jobs[unmatched])
        assert (parked.status, parked.attempts) == (JobStatus.PARKED, 1)
        assert "no worklist match" in parked.last_error
        status, reason = on_sqlite.transfer(transfers[unmatched])
        assert status == "needs-reconciliation" and "a person must reconcile it" in reason
        outcomes = {event.study_uid: event.outcome for event in on_sqlite.forward_events()}
        assert outcomes == {matched: "allowed", unmatched: "failed"}

        # A person checks the study and lets it go as the sender labelled it.
        assert on_sqlite.context.jobs.retry(jobs[unmatched], {"as_sent": True})
        assert on_sqlite.run_jobs() == 1
        assert sorted(peer.patient_ids.values()) == ["LOCAL-42", "SENDER-2"]
        assert on_sqlite.transfer(transfers[unmatched])[0] == "delivered"
        last = [e for e in on_sqlite.forward_events() if e.study_uid == unmatched][-1]
        assert '"without_reconciliation":true' in last.detail


# -- restart survival --------------------------------------------------------------------

CRASHING_WORKER = """
import sys
from pathlib import Path
from dimse.context import BridgeContext
from dimse.forward import FORWARD_STUDY, forward_handler
from exchange.models import Transfer, TransferStatus
from ferry.app import build_archive
from foundation.jobs import Worker
from ferry.settings import Settings

settings = Settings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2])
context = BridgeContext(settings.dimse(), build_archive(settings))
Worker(context.jobs, {FORWARD_STUDY: forward_handler(context)}).run_once()
"""


def test_a_delivery_cut_by_a_crash_is_completed_after_the_lease_runs_out(
    forwarding: Forwarding,
) -> None:
    spec = StudySpec()
    datasets = [ct_slice(spec=replace(spec, instance_number=n)) for n in range(1, 6)]
    study_uid = forwarding.store(datasets)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    settings = forwarding.settings
    with storage_peer(hold_at=3) as peer:
        job_pk = forwarding.enqueue(study_uid, forwarding.add_node("PEER", peer.port))
        worker = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WORKER, str(settings.data_dir), settings.database_url],
            cwd=Path(__file__).resolve().parents[2],
            env={k: v for k, v in os.environ.items() if not k.startswith("FERRY_")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if not peer.holding.wait(WAIT):
                worker.kill()
                pytest.fail(f"the worker sent nothing: {worker.communicate()[1].decode()}")
        finally:
            worker.send_signal(signal.SIGKILL)  # mid-delivery: the third answer never arrives
            worker.wait()
        peer.release.set()
        assert peer.received == uids[:3]
        assert forwarding.answers(job_pk) == {uids[0]: 0, uids[1]: 0}
        crashed = forwarding.job(job_pk)
        assert crashed.status == JobStatus.RUNNING and crashed.locked_until is not None

        assert forwarding.run_jobs() == 0  # the dead worker's lease still holds
        forwarding.clock.now = crashed.locked_until + timedelta(seconds=1)
        assert forwarding.run_jobs() == 1
    job = forwarding.job(job_pk)
    assert (job.status, job.attempts) == (JobStatus.DONE, 2)
    assert job.result == "sent 5 of 5 to PEER (2 in earlier attempts)"
    counts = Counter(peer.received)
    assert set(counts) == set(uids)
    assert counts[uids[2]] == 2  # the one in flight went again
    assert all(counts[uid] == 1 for uid in uids if uid != uids[2])  # nothing else twice


def test_a_node_that_stops_answering_is_given_up_on_and_the_retry_resumes(
    forwarding: Forwarding,
) -> None:
    """FERRY_FORWARD_RESPONSE_TIMEOUT, not the (here far longer) general DIMSE timeout."""
    config = replace(
        forwarding.context.config, forward_response_timeout=1.0, dicom_dimse_timeout=600
    )
    context = BridgeContext(config, forwarding.archive, forwarding.clock)
    spec = StudySpec()
    datasets = [ct_slice(spec=replace(spec, instance_number=n)) for n in range(1, 6)]
    study_uid = forwarding.store(datasets)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    with storage_peer(hold_at=3) as peer:  # answers two, then holds the third (WAIT seconds)
        job_pk = forwarding.enqueue(study_uid, forwarding.add_node("PEER", peer.port))
        worker = Worker(context.jobs, {FORWARD_STUDY: forward_handler(context)})
        assert worker.run_until_idle() == 1
        stalled = forwarding.job(job_pk)
        assert (stalled.status, stalled.attempts) == (JobStatus.QUEUED, 1)
        assert "sent 2 of 5 to PEER" in stalled.last_error
        assert "3 not answered" in stalled.last_error
        assert forwarding.answers(job_pk) == {uids[0]: 0, uids[1]: 0, uids[2]: -1}
        assert peer.holding.is_set() and not peer.release.is_set()

        peer.release.set()  # the node recovers
        forwarding.clock.advance(seconds=RETRY_SECONDS)
        assert worker.run_until_idle() == 1
    job = forwarding.job(job_pk)
    assert (job.status, job.attempts) == (JobStatus.DONE, 2)
    assert job.result == "sent 5 of 5 to PEER (2 in earlier attempts)"
    assert peer.received == [*uids[:3], *uids[2:]]  # the retry began at the unanswered one
