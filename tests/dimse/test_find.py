"""C-FIND SCP (PS3.4 C.4.1): DCMTK's findscu and pynetdicom against what QIDO-RS shows."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.conftest import sqlite_only
from tests.dimse.conftest import Dimse, audit_events, run_dcmtk
from tests.factories import StudySpec, ct_slice, part10_bytes, write_series
from tests.policy._people import add_institution

PENDING, PENDING_WARNING, SUCCESS, CANCEL = 0xFF00, 0xFF01, 0x0000, 0xFE00
MANY = 60  # matches: far more than can be answered before a C-CANCEL arrives
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x, Refused: Not Authorized
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # PS3.4 Table C.4-1
ALWAYS_ANSWERED = {"QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability"}

JOHN = StudySpec(patient_name="DOE^JOHN", patient_id="PID-DOE", study_date="20240115")
ANN = StudySpec(patient_name="SMITH^ANN", patient_id="PID-ANN", study_date="20230301")
JANE = StudySpec(patient_name="DOE^JANE", patient_id="PID-JANE", study_date="20240201")


def storescu(dimse: Dimse, folder: Path) -> None:
    sent = run_dcmtk(
        "storescu", "-aet", "MODALITY", "-aec", dimse.ae_title, "+sd", "127.0.0.1",
        str(dimse.port), str(folder),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def findscu(
    dimse: Dimse, out: Path, *keys: str, model: str = "-S", aet: str = "MODALITY"
) -> list[Dataset]:
    """The response identifiers findscu received, as it wrote them (-X)."""
    out.mkdir(parents=True)
    found = run_dcmtk(
        "findscu", "-aet", aet, "-aec", dimse.ae_title, model, "-X", "-od", str(out),
        *[arg for key in keys for arg in ("-k", key)], "127.0.0.1", str(dimse.port),
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def qido(dimse: Dimse, path: str, **params: str) -> list[dict[str, Any]]:
    with dimse.web.http() as http:
        response = http.get(f"{dimse.web.dicomweb_url}{path}", params=params)
    assert response.status_code == 200, response.text
    documents: list[dict[str, Any]] = response.json()
    return documents


def value(document: dict[str, Any], tag: str) -> Any:
    values = document.get(tag, {}).get("Value", [None])
    first = values[0]
    return first["Alphabetic"] if isinstance(first, dict) else first


def keywords(identifier: Dataset) -> set[str]:
    return {element.keyword for element in identifier}


def populate(dimse: Dimse, tmp_path: Path) -> dict[str, StudySpec]:
    """DOE^JOHN twice and SMITH^ANN over DIMSE; DOE^JANE and a third DOE^JOHN elsewhere."""
    john2 = replace(JOHN.new_study(), study_date="20240620", accession_number="ACC0002")
    folder = tmp_path / "sent"
    write_series(folder, 2, spec=JOHN)
    write_series(folder, 2, spec=john2)
    write_series(folder, 1, spec=replace(john2.new_series(2), modality="MR"))
    write_series(folder, 1, spec=ANN)
    storescu(dimse, folder)
    other = add_institution(dimse.archive.engine, "OTHER")
    hidden = [JANE, replace(JOHN.new_study(), study_date="20240301")]
    for number, spec in enumerate(hidden):
        paths = write_series(tmp_path / f"other{number}", 1, spec=spec)
        assert all(o.stored for o in dimse.archive.store_files(paths, institution_pk=other))
    return {"john1": JOHN, "john2": john2, "jane": JANE, "hidden_john": hidden[1]}


def test_findscu_answers_as_qido_shows(dimse: Dimse, tmp_path: Path) -> None:
    studies = populate(dimse, tmp_path)

    # STUDY level: wildcard and date range; the other institution's studies are not found
    answers = findscu(
        dimse, tmp_path / "study",
        "QueryRetrieveLevel=STUDY", "PatientName=DOE*", "StudyDate=20240101-20241231",
        "StudyInstanceUID", "PatientID", "AccessionNumber", "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    shown = qido(dimse, "/studies", PatientName="DOE*", StudyDate="20240101-20241231")
    expected = {studies["john1"].study_uid, studies["john2"].study_uid}
    assert {str(a.StudyInstanceUID) for a in answers} == expected
    assert {value(d, "0020000D") for d in shown} == expected
    for answer in answers:
        document = next(d for d in shown if value(d, "0020000D") == answer.StudyInstanceUID)
        assert str(answer.PatientName) == value(document, "00100010") == "DOE^JOHN"
        assert answer.AccessionNumber == value(document, "00080050")
        assert int(answer.NumberOfStudyRelatedInstances) == value(document, "00201208")
        modalities = answer.ModalitiesInStudy
        listed = [modalities] if isinstance(modalities, str) else list(modalities)
        assert listed == document["00080061"]["Value"]
        assert answer.QueryRetrieveLevel == "STUDY"
        assert answer.RetrieveAETitle == dimse.ae_title
        assert keywords(answer) == ALWAYS_ANSWERED | {
            "PatientName", "StudyDate", "StudyInstanceUID", "PatientID", "AccessionNumber",
            "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
        }  # fmt: skip

    # SERIES level under one study
    john2 = studies["john2"].study_uid
    answers = findscu(
        dimse, tmp_path / "series",
        "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={john2}", "SeriesInstanceUID",
        "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    )  # fmt: skip
    shown = qido(dimse, f"/studies/{john2}/series")
    by_uid = {value(d, "0020000E"): d for d in shown}
    assert {str(a.SeriesInstanceUID) for a in answers} == set(by_uid) and len(answers) == 2
    for answer in answers:
        document = by_uid[answer.SeriesInstanceUID]
        assert answer.Modality == value(document, "00080060")
        assert int(answer.SeriesNumber) == value(document, "00200011")
        assert int(answer.NumberOfSeriesRelatedInstances) == value(document, "00201209")

    # IMAGE level under one series
    series = studies["john2"].series_uid
    answers = findscu(
        dimse, tmp_path / "image",
        "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={john2}", f"SeriesInstanceUID={series}",
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
    )  # fmt: skip
    shown = qido(dimse, f"/studies/{john2}/series/{series}/instances")
    assert sorted((int(a.InstanceNumber), str(a.SOPInstanceUID)) for a in answers) == sorted(
        (value(d, "00200013"), value(d, "00080018")) for d in shown
    )
    assert {a.SOPClassUID for a in answers} == {value(d, "00080016") for d in shown}

    # Patient Root, PATIENT level: one patient, counting only the studies visible here
    answers = findscu(
        dimse, tmp_path / "patient",
        "QueryRetrieveLevel=PATIENT", "PatientName=DOE*", "PatientID",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances", model="-P",
    )  # fmt: skip
    shown = qido(dimse, "/studies", PatientName="DOE*")
    assert [(a.PatientID, str(a.PatientName)) for a in answers] == [("PID-DOE", "DOE^JOHN")]
    assert int(answers[0].NumberOfPatientRelatedStudies) == len(shown) == 2
    assert int(answers[0].NumberOfPatientRelatedInstances) == 5

    # The reverse: stored over STOW-RS, found over DIMSE
    roe = StudySpec(patient_name="ROE^RICHARD", patient_id="PID-ROE")
    body = part10_bytes(ct_slice(spec=roe))
    with dimse.web.http() as http:
        stowed = http.post(
            f"{dimse.web.dicomweb_url}/studies",
            content=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + body + b"\r\n--b--\r\n",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        )
    assert stowed.status_code == 200, stowed.text
    answers = findscu(
        dimse, tmp_path / "stowed", "QueryRetrieveLevel=STUDY", "PatientName=roe*",
        "StudyInstanceUID",
    )  # fmt: skip
    assert [str(a.StudyInstanceUID) for a in answers] == [roe.study_uid]

    searches = audit_events(dimse, "search", protocol="dimse")
    assert [json.loads(e.detail)["matches"] for e in searches] == [2, 2, 2, 1, 1]
    assert json.loads(searches[0].detail)["level"] == "STUDY"
    assert json.loads(searches[0].detail)["keys"] == {
        "PatientName": "DOE*",
        "StudyDate": "20240101-20241231",
    }
    assert {e.actor for e in searches} == {"node:MODALITY"}


# -- refusals and bad identifiers, with pynetdicom as the requestor -------------------------------


def find(
    dimse: Dimse, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind,
    aet: str = "MODALITY",
) -> list[tuple[Dataset, Dataset | None]]:  # fmt: skip
    ae = AE(ae_title=aet)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@sqlite_only
def test_node_without_query_rights_is_refused(dimse: Dimse) -> None:
    dimse.add_node("WRITER", can_query=False)
    responses = find(
        dimse, identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=""), aet="WRITER"
    )
    assert [(status.Status, answer) for status, answer in responses] == [(NOT_AUTHORIZED, None)]
    assert responses[0][0].ErrorComment
    denied = audit_events(dimse, "search", protocol="dimse")
    assert [(e.actor, e.outcome) for e in denied] == [("node:WRITER", "denied")]
    assert denied[0].institution_pk == dimse.institution_pk


@sqlite_only
def test_malformed_identifiers_fail_with_a_reason(dimse: Dimse, tmp_path: Path) -> None:
    write_series(tmp_path / "s", 1, spec=JOHN)
    storescu(dimse, tmp_path / "s")
    cases = [
        (identifier(PatientName="DOE*"), "QueryRetrieveLevel", 0x00080052),
        (identifier(QueryRetrieveLevel="PATIENT", PatientID=""), "Study Root", 0x00080052),
        (identifier(QueryRetrieveLevel="FRAME", PatientID=""), "FRAME", 0x00080052),
        (identifier(QueryRetrieveLevel="STUDY", Modality="CT"), "SERIES key", 0x00080060),
        (identifier(QueryRetrieveLevel="STUDY", StudyDate="20241231-20240101"), "StudyDate", None),
        (identifier(QueryRetrieveLevel="STUDY", StudyDate="2024-01"), "StudyDate", None),
        (identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.*"), "UID", None),
    ]
    for query, reason, offending in cases:
        responses = find(dimse, query)
        assert len(responses) == 1, query
        status = responses[0][0]
        assert status.Status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, (query, status)
        assert reason in status.ErrorComment, status.ErrorComment
        if offending is not None:
            assert status.OffendingElement == offending
    # the bridge still answers, and an optional key it cannot match is a Pending Warning
    responses = find(
        dimse,
        identifier(
            QueryRetrieveLevel="STUDY", StudyInstanceUID=JOHN.study_uid, PatientName="",
            PatientComments="anything", OtherPatientNames="", StudyDescription="",
            InstitutionName="",
        ),
    )  # fmt: skip
    assert [status.Status for status, _ in responses] == [PENDING_WARNING, SUCCESS]
    answer = responses[0][1]
    assert answer is not None
    assert keywords(answer) == ALWAYS_ANSWERED | {
        "StudyInstanceUID", "PatientName", "StudyDescription",
    }  # fmt: skip
    failed = [e for e in audit_events(dimse, "search", protocol="dimse") if e.outcome == "failed"]
    assert len(failed) == len(cases)


@sqlite_only
def test_non_ascii_answers_carry_their_character_set(dimse: Dimse, tmp_path: Path) -> None:
    spec = StudySpec(patient_name="Müller^Jürgen", patient_id="PID-MUELLER")
    write_series(tmp_path / "s", 1, spec=spec)
    storescu(dimse, tmp_path / "s")
    latin1 = identifier(
        SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="STUDY", PatientName="Mü*",
        StudyInstanceUID="",
    )  # fmt: skip
    answers = [answer for _, answer in find(dimse, latin1) if answer is not None]
    assert [(a.SpecificCharacterSet, str(a.PatientName)) for a in answers] == [
        ("ISO_IR 100", "Müller^Jürgen")
    ]
    plain = identifier(QueryRetrieveLevel="STUDY", PatientID="PID-MUELLER", PatientName="")
    answers = [answer for _, answer in find(dimse, plain) if answer is not None]
    assert [(a.SpecificCharacterSet, str(a.PatientName)) for a in answers] == [
        ("ISO_IR 192", "Müller^Jürgen")
    ]


@sqlite_only
def test_cancelled_find_stops_answering(dimse: Dimse, tmp_path: Path) -> None:
    spec = StudySpec()
    paths = write_series(tmp_path / "s", MANY, spec=spec, Rows=8, Columns=8)
    assert all(
        outcome.stored
        for outcome in dimse.archive.store_files(paths, institution_pk=dimse.institution_pk)
    )
    model = StudyRootQueryRetrieveInformationModelFind
    query = identifier(
        QueryRetrieveLevel="IMAGE", StudyInstanceUID=spec.study_uid,
        SeriesInstanceUID=spec.series_uid, SOPInstanceUID="",
    )  # fmt: skip
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(model)
    handlers = [(evt.EVT_CONN_OPEN, no_delay)]
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title, evt_handlers=handlers)
    assert assoc.is_established
    try:
        statuses = []
        for status, _ in assoc.send_c_find(query, model, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=model)
        again = list(assoc.send_c_find(query, model))  # the association serves on
    finally:
        assoc.release()
    assert statuses[0] == PENDING and statuses[-1] == CANCEL
    assert len(statuses) - 1 < MANY
    assert len(again) == MANY + 1
    assert (
        json.loads(audit_events(dimse, "search", protocol="dimse")[0].detail)["cancelled"] is True
    )


def no_delay(event: evt.Event) -> None:
    """Nagle would hold the C-CANCEL back until the request is acknowledged."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
