"""C-STORE with UIDs another institution holds (FERRY_REPLACE_DUPLICATES=true): nothing of
theirs is replaced; the refusal names no owner and reads alike for a study and an instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from audit.search import AuditQuery, iter_events
from dimse.server import Bridge
from ferry.app import build_archive
from tests.conftest import free_port, make_settings, run_server, sqlite_only
from tests.dimse.conftest import Clock, Dimse
from tests.factories import StudySpec, ct_slice
from tests.policy._people import add_institution

pytestmark = sqlite_only

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110


@pytest.fixture
def replacing(tmp_path: Path, database_url: str) -> Iterator[Dimse]:
    settings = make_settings(
        tmp_path, database_url, dicom_port=free_port(), replace_duplicates=True
    )
    archive = build_archive(settings)
    try:
        for web in run_server(settings, archive):
            bridge = Bridge(settings, archive, clock=Clock())
            bridge.start()
            try:
                running = Dimse(web, bridge, Clock())
                running.add_node("MODALITY")
                yield running
            finally:
                bridge.stop()
    finally:
        archive.engine.dispose()


def _store(dimse: Dimse, calling: str, *instances: Dataset) -> list[Dataset]:
    ae = AE(calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in instances]
    finally:
        assoc.release()


def _blob(dimse: Dimse, ds: Dataset) -> bytes:
    (stored,) = dimse.archive.find_instances(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    with dimse.archive.blobs.open(stored.blob_key) as handle:
        return handle.read()


def _denied(dimse: Dimse, actor: str) -> list:
    query = AuditQuery(actor=actor, action="store", outcome="denied")
    deadline = time.monotonic() + 10  # written when the association ends, on Ferry's side
    while time.monotonic() < deadline:
        events = list(iter_events(dimse.archive.engine, query))
        if events:
            return events
        time.sleep(0.02)
    return []


def test_a_node_cannot_replace_or_probe_another_institutions_data(replacing: Dimse) -> None:
    dimse = replacing
    other = add_institution(dimse.archive.engine, "OTHER")
    dimse.add_node("OTHERPACS", other)
    mine = ct_slice()
    (stored,) = _store(dimse, "MODALITY", mine)
    assert int(stored.Status) == SUCCESS
    original = _blob(dimse, mine)
    reused_instance = ct_slice(SOPInstanceUID=mine.SOPInstanceUID, PatientID="THEIRS")
    into_my_study = ct_slice(
        spec=StudySpec(study_uid=mine.StudyInstanceUID, series_uid=mine.SeriesInstanceUID)
    )
    fresh = ct_slice()
    answers = _store(dimse, "OTHERPACS", reused_instance, into_my_study, fresh)
    assert [int(a.Status) for a in answers] == [PROCESSING_FAILURE, PROCESSING_FAILURE, SUCCESS]
    assert answers[0].ErrorComment == answers[1].ErrorComment
    for words in ("institution", "belongs", "duplicate", "HOSP"):
        assert words not in answers[0].ErrorComment.lower()
    assert _blob(dimse, mine) == original
    assert dimse.archive.read_study_access(reused_instance.StudyInstanceUID) is None
    denied = _denied(dimse, "node:OTHERPACS")
    assert {(e.rule, e.study_uid) for e in denied} == {
        ("uid-in-use", reused_instance.StudyInstanceUID),
        ("uid-in-use", mine.StudyInstanceUID),
    }


def test_a_node_replaces_its_own_instance_within_its_study(replacing: Dimse) -> None:
    dimse = replacing
    mine = ct_slice()
    corrected = ct_slice(
        spec=StudySpec(study_uid=mine.StudyInstanceUID, series_uid=mine.SeriesInstanceUID),
        SOPInstanceUID=mine.SOPInstanceUID,
        StudyDescription="corrected",
    )
    answers = _store(dimse, "MODALITY", mine, corrected)
    assert [int(a.Status) for a in answers] == [SUCCESS, SUCCESS]
    assert b"corrected" in _blob(dimse, mine)
