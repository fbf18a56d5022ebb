"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): movescu into a storescp the test runs, getscu."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests._peers import start_scp
from tests._peers import storescp as dcmtk_storescp
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse, audit_events, run_dcmtk
from tests.factories import StudySpec, ct_slice, jpeg2000, jpeg_baseline, part10_bytes
from tests.policy._people import add_institution

SUCCESS, PENDING = 0x0000, 0xFF00
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x, Refused: Not Authorized
MOVE_DESTINATION_UNKNOWN = 0xA801  # PS3.4 Table C.4-2
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
SUB_OPERATIONS_WARNING = 0xB000  # one or more sub-operations failed
UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
START_WAIT = 30  # seconds; a bound on waiting for storescp to listen, not a timing assertion


@contextmanager
def storescp(folder: Path, port: int) -> Iterator[None]:
    """DCMTK's storescp, accepting uncompressed syntaxes only, writing what it receives as is."""
    folder.mkdir(parents=True)
    with dcmtk_storescp(folder, port, "+B"):
        yield


def store(dimse: Dimse, folder: Path, datasets: list[Dataset], institution_pk: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10_bytes(ds))
        paths.append(path)
    outcomes = dimse.archive.store_files(paths, institution_pk=institution_pk)
    assert all(outcome.stored for outcome in outcomes), outcomes


def mixed_study(spec: StudySpec) -> list[Dataset]:
    """Two CT slices as Explicit VR Little Endian, a JPEG Baseline and a JPEG 2000 instance."""
    return [
        ct_slice(spec=spec),
        ct_slice(spec=replace(spec, instance_number=2)),
        jpeg_baseline(spec=spec.new_series(2)),
        jpeg2000(spec=spec.new_series(3)),
    ]


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set, after its file meta information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def received(folder: Path) -> dict[str, Path]:
    return {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): path
        for path in folder.iterdir()
    }


def assert_same_instances(dimse: Dimse, study_uid: str, folder: Path) -> None:
    """Every instance arrived: as stored when uncompressed, else decoded to an uncompressed one."""
    stored = {i.sop_instance_uid: i for i in dimse.archive.find_instances(study_uid)}
    arrived = received(folder)
    assert set(arrived) == set(stored)
    for uid, instance in stored.items():
        with dimse.archive.blobs.open(instance.blob_key) as blob:
            if instance.transfer_syntax_uid in UNCOMPRESSED:
                assert dataset_bytes(arrived[uid]) == dataset_bytes(Path(blob.name))
                continue  # not a byte changed
            original = dcmread(blob)
        copy = dcmread(arrived[uid])
        assert copy.file_meta.TransferSyntaxUID in UNCOMPRESSED
        assert copy.pixel_array.shape == original.pixel_array.shape
        if instance.transfer_syntax_uid == JPEG2000Lossless:  # the very same pixels
            assert np.array_equal(copy.pixel_array, original.pixel_array)


def movescu(
    dimse: Dimse, destination: str, *keys: str, model: str = "-S"
) -> subprocess.CompletedProcess[str]:
    return run_dcmtk(
        "movescu", "-aet", "MODALITY", "-aec", dimse.ae_title, "-aem", destination, model,
        *[arg for key in keys for arg in ("-k", key)], "127.0.0.1", str(dimse.port),
    )  # fmt: skip


def test_movescu_into_storescp(dimse: Dimse, tmp_path: Path) -> None:
    mine, theirs = StudySpec(), StudySpec(patient_id="PID-OTHER")
    store(dimse, tmp_path / "mine", mixed_study(mine), dimse.institution_pk)
    other = add_institution(dimse.archive.engine, "OTHER")
    store(dimse, tmp_path / "theirs", [ct_slice(spec=theirs)], other)
    port = free_port()
    dimse.add_node("STORESCP", port=port, move_destination=True)
    folder = tmp_path / "storescp"
    with storescp(folder, port):
        moved = movescu(
            dimse, "STORESCP", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={mine.study_uid}"
        )
        assert moved.returncode == 0, moved.stderr
        assert_same_instances(dimse, mine.study_uid, folder)
        # another institution's study matches nothing: a success with no sub-operations
        hidden = movescu(
            dimse, "STORESCP", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={theirs.study_uid}"
        )
        assert hidden.returncode == 0, hidden.stderr
        assert theirs.series_uid not in {
            str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
            for path in folder.iterdir()
        }
    downloads = audit_events(dimse, "download", protocol="dimse")
    assert [(e.study_uid, e.outcome) for e in downloads] == [
        (mine.study_uid, "allowed"),
        (theirs.study_uid, "denied"),
    ]
    assert json.loads(downloads[0].detail)["destination"] == "STORESCP"
    assert json.loads(downloads[0].detail)["instances"] == 4
    assert downloads[1].institution_pk == other  # the owner's auditors see the attempt


# -- pynetdicom as the requestor: levels, counts and refusals ---------------------------------


def move(
    dimse: Dimse, destination: str, identifier: Dataset,
    model: str = StudyRootQueryRetrieveInformationModelMove, aet: str = "MODALITY",
) -> Dataset:  # fmt: skip
    """The final C-MOVE response: status, sub-operation counts and `.identifier`."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_move(identifier, destination, model))
    finally:
        assoc.release()
    final, identifier = responses[-1]
    assert all(status.Status == PENDING for status, _ in responses[:-1])
    final.identifier = identifier
    return final


def keys(**values: str) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@sqlite_only
def test_move_levels_refusals_and_unknown_destinations(dimse: Dimse, tmp_path: Path) -> None:
    spec = StudySpec(patient_id="PID-LEVELS")
    study = mixed_study(spec)
    store(dimse, tmp_path / "mine", study, dimse.institution_pk)
    port = free_port()
    dimse.add_node("STORESCP", port=port, move_destination=True)
    dimse.add_node("NOTADEST", port=port, move_destination=False)
    dimse.add_node("WRITER", can_query=False)
    other = add_institution(dimse.archive.engine, "OTHER")
    dimse.add_node("FOREIGN", other, port=port, move_destination=True)
    with storescp(tmp_path / "storescp", port):
        by_level = [
            (keys(QueryRetrieveLevel="SERIES", StudyInstanceUID=spec.study_uid,
                  SeriesInstanceUID=spec.series_uid), 2),
            (keys(QueryRetrieveLevel="IMAGE", StudyInstanceUID=spec.study_uid,
                  SeriesInstanceUID=spec.series_uid, SOPInstanceUID=study[1].SOPInstanceUID), 1),
        ]  # fmt: skip
        for identifier, count in by_level:
            final = move(dimse, "STORESCP", identifier)
            assert (final.Status, final.NumberOfCompletedSuboperations) == (SUCCESS, count)
        patient = keys(QueryRetrieveLevel="PATIENT", PatientID="PID-LEVELS")
        final = move(dimse, "STORESCP", patient, PatientRootQueryRetrieveInformationModelMove)
        assert (final.Status, final.NumberOfCompletedSuboperations) == (SUCCESS, 4)

        whole = keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=spec.study_uid)
        for destination in ("NOWHERE", "NOTADEST", "FOREIGN"):
            assert move(dimse, destination, whole).Status == MOVE_DESTINATION_UNKNOWN
        refused = move(dimse, "STORESCP", whole, aet="WRITER")
        assert refused.Status == NOT_AUTHORIZED and refused.ErrorComment
        malformed = move(
            dimse, "STORESCP", keys(QueryRetrieveLevel="SERIES", StudyInstanceUID=spec.study_uid)
        )
        assert malformed.Status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        assert "SeriesInstanceUID" in malformed.ErrorComment
    downloads = audit_events(dimse, "download", protocol="dimse")
    refusals = [
        (e.actor, e.rule, json.loads(e.detail).get("destination"))
        for e in downloads
        if e.outcome == "denied"
    ]
    assert refusals == [
        ("node:MODALITY", "move-destination-unknown", "NOWHERE"),
        ("node:MODALITY", "move-destination-unknown", "NOTADEST"),
        ("node:MODALITY", "move-destination-elsewhere", "FOREIGN"),
        ("node:WRITER", "default-deny", "STORESCP"),
    ]


@sqlite_only
def test_move_reports_the_instances_a_destination_refused(dimse: Dimse, tmp_path: Path) -> None:
    """A destination that takes CT only: the Secondary Capture fails, the rest arrive."""
    spec = StudySpec()
    study = mixed_study(spec)
    store(dimse, tmp_path / "mine", study, dimse.institution_pk)
    port = free_port()
    dimse.add_node("CTONLY", port=port, move_destination=True)
    arrived: list[tuple[str, str]] = []

    def on_store(event: evt.Event) -> int:
        arrived.append((event.dataset.SOPInstanceUID, event.context.transfer_syntax))
        return SUCCESS

    ae = AE(ae_title="CTONLY")
    ae.add_supported_context(CTImageStorage, sorted(UNCOMPRESSED))
    server = start_scp(ae, port, [(evt.EVT_C_STORE, on_store)])
    try:
        final = move(
            dimse, "CTONLY", keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=spec.study_uid)
        )
    finally:
        server.shutdown()
    secondary_capture = study[2]
    assert final.Status == SUB_OPERATIONS_WARNING
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 1)
    assert final.identifier.FailedSOPInstanceUIDList == secondary_capture.SOPInstanceUID
    assert sorted(uid for uid, _ in arrived) == sorted(
        ds.SOPInstanceUID for ds in study if ds is not secondary_capture
    )
    assert {syntax for _, syntax in arrived} <= UNCOMPRESSED  # the JPEG 2000 CT decoded


def test_getscu_into_a_folder(dimse: Dimse, tmp_path: Path) -> None:
    mine, theirs = StudySpec(), StudySpec(patient_id="PID-OTHER")
    store(dimse, tmp_path / "mine", mixed_study(mine), dimse.institution_pk)
    other = add_institution(dimse.archive.engine, "OTHER")
    store(dimse, tmp_path / "theirs", [ct_slice(spec=theirs)], other)
    folder = tmp_path / "got"
    folder.mkdir()
    for study_uid in (mine.study_uid, theirs.study_uid):
        got = run_dcmtk(
            "getscu", "-aet", "MODALITY", "-aec", dimse.ae_title, "-S", "-od", str(folder),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
            "127.0.0.1", str(dimse.port),
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
    assert_same_instances(dimse, mine.study_uid, folder)  # and nothing of the other study
    downloads = audit_events(dimse, "download", protocol="dimse")
    assert [(e.outcome, json.loads(e.detail).get("service")) for e in downloads] == [
        ("allowed", "C-GET"),
        ("denied", "C-GET"),
    ]
