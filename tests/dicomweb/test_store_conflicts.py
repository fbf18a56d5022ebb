"""STOW-RS with UIDs another institution holds: nothing of theirs is replaced, and the refusal
names no owner and does not tell a study from an instance (FERRY_REPLACE_DUPLICATES=true)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from archive.store import Archive
from audit.search import AuditQuery, search_events
from ferry.app import build_archive
from tests import factories
from tests.conftest import RunningServer, make_settings, run_server
from tests.policy._people import add_institution

FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
PROCESSING_FAILURE = 0x0110


@pytest.fixture
def replacing(tmp_path: Path, database_url: str) -> Iterator[RunningServer]:
    settings = make_settings(tmp_path, database_url, replace_duplicates=True)
    archive: Archive = build_archive(settings)
    try:
        yield from run_server(settings, archive)
    finally:
        archive.engine.dispose()


def _stow(server: RunningServer, token: str, ds: Dataset) -> httpx.Response:
    body = (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n"
        + factories.part10_bytes(ds)
        + b"\r\n--b--\r\n"
    )
    return httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/related; type=application/dicom; boundary=b",
        },
        timeout=30,
    )


def _retrieve(server: RunningServer, ds: Dataset) -> bytes:
    (stored,) = server.archive.find_instances(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    with server.archive.blobs.open(stored.blob_key) as handle:
        return handle.read()


def _refusal(response: httpx.Response) -> tuple[int, list[int], str]:
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    reasons = [item[FAILURE_REASON]["Value"][0] for item in failed]
    warning = response.headers["warning"].rsplit(": ", 1)[-1]
    return response.status_code, reasons, warning


def test_another_institutions_instance_is_never_replaced(replacing: RunningServer) -> None:
    server = replacing
    other = add_institution(server.archive.engine, "OTHER")
    theirs = server.token_for("s@other.test", {other: "sender,viewer"})
    mine = factories.ct_slice()
    assert _stow(server, server.token, mine).status_code == 200
    original = _retrieve(server, mine)
    # Their own new study, reusing my SOP Instance UID with other content.
    reused = factories.ct_slice(SOPInstanceUID=mine.SOPInstanceUID, PatientID="THEIRS")
    assert reused.StudyInstanceUID != mine.StudyInstanceUID
    response = _stow(server, theirs, reused)
    assert _refusal(response)[:2] == (409, [PROCESSING_FAILURE])
    assert _retrieve(server, mine) == original
    assert server.archive.read_study_access(reused.StudyInstanceUID) is None
    # Into my study, my UID, as they: refused too (the study is not theirs).
    changed = factories.ct_slice(
        spec=factories.StudySpec(
            study_uid=mine.StudyInstanceUID, series_uid=mine.SeriesInstanceUID
        ),
        SOPInstanceUID=mine.SOPInstanceUID,
        PatientID="THEIRS",
    )
    assert _stow(server, theirs, changed).status_code == 409
    assert _retrieve(server, mine) == original
    denied = search_events(
        server.archive.engine, AuditQuery(actor="user:s@other.test", outcome="denied")
    ).entries
    assert [(e.action, e.rule) for e in denied] == [("store", "uid-in-use")] * 2


def test_my_own_instance_is_replaced_only_within_its_study(replacing: RunningServer) -> None:
    server = replacing
    mine = factories.ct_slice()
    assert _stow(server, server.token, mine).status_code == 200
    same_study = factories.ct_slice(
        spec=factories.StudySpec(
            study_uid=mine.StudyInstanceUID, series_uid=mine.SeriesInstanceUID
        ),
        SOPInstanceUID=mine.SOPInstanceUID,
        StudyDescription="corrected",
    )
    assert _stow(server, server.token, same_study).status_code == 200
    assert b"corrected" in _retrieve(server, mine)
    elsewhere = factories.ct_slice(SOPInstanceUID=mine.SOPInstanceUID)  # my own other study
    assert _refusal(_stow(server, server.token, elsewhere))[:2] == (409, [PROCESSING_FAILURE])
    assert b"corrected" in _retrieve(server, mine)


def test_an_instance_replaced_into_another_series_leaves_nothing_of_the_old_behind(
    replacing: RunningServer,
) -> None:
    """A corrected instance sent again with another Series Instance UID (a modality's fix of
    its series, say): the study then has only the new series, the old one is gone from every
    query, and no thumbnail or frame layout made from the old bytes stays on disk."""
    server = replacing
    mine = factories.ct_slice()
    assert _stow(server, server.token, mine).status_code == 200
    study_url = f"{server.dicomweb_url}/studies/{mine.StudyInstanceUID}"
    old_series_url = f"{study_url}/series/{mine.SeriesInstanceUID}"
    with server.http() as http:
        instance_url = f"{old_series_url}/instances/{mine.SOPInstanceUID}"
        assert http.get(f"{instance_url}/thumbnail", headers={"Accept": "image/jpeg"}).is_success
        assert http.get(f"{instance_url}/frames/1").is_success
    (old,) = server.archive.find_instances(mine.StudyInstanceUID)
    made = [p for root in server.archive.derived_dirs for p in root.rglob("*") if p.is_file()]
    assert server.archive.frame_cache_dir is not None
    made += list(server.archive.frame_cache_dir.rglob("*.json"))
    assert made, "the thumbnail and the frame layout were made from the old bytes"

    moved = factories.ct_slice(
        spec=factories.StudySpec(study_uid=mine.StudyInstanceUID),
        SOPInstanceUID=mine.SOPInstanceUID,
    )
    assert moved.SeriesInstanceUID != mine.SeriesInstanceUID
    assert _stow(server, server.token, moved).status_code == 200

    with server.http() as http:
        series = http.get(f"{study_url}/series").json()
        assert [s["0020000E"]["Value"][0] for s in series] == [moved.SeriesInstanceUID]
        (study,) = http.get(
            f"{server.dicomweb_url}/studies",
            params={"StudyInstanceUID": mine.StudyInstanceUID,
                    "includefield": "NumberOfStudyRelatedSeries"},
        ).json()  # fmt: skip
        assert study["00201206"]["Value"] == [1]
        found = http.get(f"{old_series_url}/instances")  # a search: no match is 200, []
        assert found.status_code == 200 and found.json() == []
        assert http.get(f"{old_series_url}/metadata").status_code == 404
    assert not [p for p in made if p.exists()], "files made from the replaced bytes remain"
    (new,) = server.archive.find_instances(mine.StudyInstanceUID)
    assert new.blob_key != old.blob_key


def test_a_taken_uid_answers_alike_for_studies_and_instances_naming_no_owner(
    server: RunningServer,
) -> None:
    other = add_institution(server.archive.engine, "OTHER")
    theirs = server.token_for("s@other.test", {other: "sender,viewer"})
    mine = factories.ct_slice()
    assert _stow(server, server.token, mine).status_code == 200
    into_my_study = factories.ct_slice(
        spec=factories.StudySpec(study_uid=mine.StudyInstanceUID, series_uid=mine.SeriesInstanceUID)
    )
    my_instance_uid = factories.ct_slice(SOPInstanceUID=mine.SOPInstanceUID)
    study_refusal = _refusal(_stow(server, theirs, into_my_study))
    instance_refusal = _refusal(_stow(server, theirs, my_instance_uid))
    assert study_refusal == instance_refusal
    assert study_refusal[:2] == (409, [PROCESSING_FAILURE])
    for words in ("institution", "another", "belongs", "HOSP", "duplicate"):
        assert words not in study_refusal[2].lower()
    assert _stow(server, theirs, factories.ct_slice()).status_code == 200  # fresh UIDs: stored
