"""Studies of hundreds of instances sent out while Ferry is busy receiving: none may stall.

pynetdicom's reactor could take the answer to a C-STORE meant for the thread waiting in
send_c_store (see dimse/_reactor.py); the association then hung until the DIMSE timeout.
It showed under load, with fast peers: here a DCMTK storescp and a pynetdicom SCP, while
storescu keeps another association storing into Ferry's own bridge in the same process.
Every study must arrive whole on the first attempt, for forwarding jobs and for C-MOVE.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove

from dimse.context import BridgeContext
from dimse.forward import FORWARD_STUDY, enqueue_forward, forward_handler
from foundation.jobs import JobStatus, Worker
from tests._peers import start_scp, storescp
from tests.conftest import free_port
from tests.dimse.conftest import Dimse, dcmtk, run_dcmtk
from tests.factories import StudySpec, ct_slice, part10_bytes

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

STUDIES = 3  # per peer: with a one-in-three stall per study, six clean runs in a row
INSTANCES = 150
SUCCESS = 0x0000


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """SQLite only: what is tested is the DIMSE traffic, not the index."""
    return sqlite_database_url


def write_study(folder: Path, count: int) -> tuple[str, list[Path]]:
    spec = StudySpec()
    folder.mkdir(parents=True)
    paths = []
    for number in range(1, count + 1):
        ds = ct_slice(spec=replace(spec, instance_number=number))
        path = folder / f"{number:04d}.dcm"
        path.write_bytes(part10_bytes(ds))
        paths.append(path)
    return spec.study_uid, paths


def store_studies(dimse: Dimse, folder: Path, count: int) -> list[str]:
    studies = []
    for index in range(count):
        study_uid, paths = write_study(folder / f"study-{index}", INSTANCES)
        outcomes = dimse.archive.store_files(paths, institution_pk=dimse.institution_pk)
        assert all(outcome.stored for outcome in outcomes)
        studies.append(study_uid)
    return studies


@contextmanager
def storing_into_ferry(dimse: Dimse, folder: Path) -> Iterator[list[int]]:
    """storescu sends a study into Ferry again and again (its own association each time)."""
    write_study(folder, 50)
    stop = threading.Event()
    codes: list[int] = []

    def keep_storing() -> None:
        while not stop.is_set():
            sent = run_dcmtk(
                "storescu", "-aet", "MODALITY", "-aec", dimse.ae_title, "+sd",
                "127.0.0.1", str(dimse.port), str(folder), timeout=300,
            )  # fmt: skip
            codes.append(sent.returncode)

    thread = threading.Thread(target=keep_storing, daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(timeout=300)
    assert codes and set(codes) == {0}  # the other association kept storing, successfully


class Receiver:
    """A pynetdicom storage SCP that answers at once and counts what it got, per study."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: Counter[str] = Counter()
        ae = AE("PYSCP")
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = start_scp(ae, self.port, [(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: evt.Event) -> int:
        self.received[str(event.request.AffectedSOPInstanceUID)] += 1
        return SUCCESS


def files_per_study(folder: Path) -> Counter[str]:
    return Counter(
        str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        for path in folder.iterdir()
        if path.is_file()
    )


def test_forwarded_studies_arrive_whole_on_the_first_attempt(dimse: Dimse, tmp_path: Path) -> None:
    to_dcmtk = store_studies(dimse, tmp_path / "a", STUDIES)
    to_pynetdicom = store_studies(dimse, tmp_path / "b", STUDIES)
    context = BridgeContext(dimse.web.settings.dimse(), dimse.archive, dimse.clock)
    worker = Worker(context.jobs, {FORWARD_STUDY: forward_handler(context)})
    pynetdicom_peer = Receiver()
    dcmtk_port = free_port()
    dimse.add_node("STORESCP", port=dcmtk_port)
    dimse.add_node("PYSCP", port=pynetdicom_peer.port)
    jobs = []
    try:
        with (
            storescp(tmp_path / "storescp", dcmtk_port, ae_title="STORESCP") as folder,
            storing_into_ferry(dimse, tmp_path / "incoming"),
        ):
            for dcmtk_study, pynetdicom_study in zip(to_dcmtk, to_pynetdicom, strict=True):
                for study_uid, node in ((dcmtk_study, "STORESCP"), (pynetdicom_study, "PYSCP")):
                    jobs.append(enqueue(context, study_uid, dimse.nodes[node]))
                    assert worker.run_until_idle() == 1
        for job_pk, node in zip(jobs, ["STORESCP", "PYSCP"] * STUDIES, strict=True):
            job = context.jobs.get(job_pk)
            assert job is not None
            assert (job.status, job.attempts) == (JobStatus.DONE, 1), job.last_error
            assert job.result == f"sent {INSTANCES} of {INSTANCES} to {node}"
        assert files_per_study(folder) == Counter({uid: INSTANCES for uid in to_dcmtk})
        assert len(pynetdicom_peer.received) == STUDIES * INSTANCES
        assert set(pynetdicom_peer.received.values()) == {1}  # each instance once
    finally:
        pynetdicom_peer.server.shutdown()


def enqueue(context: BridgeContext, study_uid: str, node_pk: int) -> int:
    with context.engine.begin() as connection:
        return enqueue_forward(
            connection, study_uid=study_uid, node_pk=node_pk, now=context.clock(), max_attempts=1
        )


def move_study(dimse: Dimse, study_uid: str, destination: str) -> Dataset:
    """The final C-MOVE response, from a pynetdicom requestor."""
    ae = AE("MODALITY")
    ae.dimse_timeout = 600  # the sub-operations are what is tested, not this association
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        responses = list(
            assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    return responses[-1][0]


def test_moved_studies_arrive_whole_at_a_storescp(dimse: Dimse, tmp_path: Path) -> None:
    dcmtk("storescu")
    studies = store_studies(dimse, tmp_path / "a", 2 * STUDIES)
    port = free_port()
    dimse.add_node("MOVEDEST", port=port, move_destination=True)
    finals = []
    with (
        storescp(tmp_path / "storescp", port, ae_title="MOVEDEST") as folder,
        storing_into_ferry(dimse, tmp_path / "incoming"),
    ):
        for study_uid in studies:
            finals.append(move_study(dimse, study_uid, "MOVEDEST"))
    for final in finals:
        assert final.Status == SUCCESS
        assert final.NumberOfCompletedSuboperations == INSTANCES
        assert final.NumberOfFailedSuboperations == 0
    assert files_per_study(folder) == Counter({uid: INSTANCES for uid in studies})
