"""Worklist reconciliation against DCMTK's `wlmscpfs` serving a worklist the test writes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlmodel import Session

from dimse.callers import get_node
from dimse.context import BridgeContext
from dimse.reconcile import NoWorklistMatch, WorklistUnavailable, reconciler_for
from dimse.sending import read_dataset
from ferry.settings import replace_settings
from policy.decision import NodeFacts
from policy.models import Institution
from tests._peers import dcmtk_peer
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse
from tests.dimse.test_remote import audit_events, silent_peer
from tests.factories import StudySpec, ct_slice

RIS = "RIS"
SENDER_NAME = "St Mary's Hospital"


@dataclass
class Worklist:
    """wlmscpfs on a folder of .wl files (one folder per called AE title)."""

    folder: Path
    requests: Path
    port: int

    def add_order(self, **values: str) -> None:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = values.get("name", "Local^Patient")
        ds.PatientID = values.get("patient_id", "L-1")
        ds.IssuerOfPatientID = values.get("issuer", "HOSP")
        ds.PatientBirthDate = values.get("birth_date", "19700101")
        ds.PatientSex = values.get("sex", "O")
        ds.AccessionNumber = values.get("accession", "HOSP-ACC-1")
        ds.StudyInstanceUID = generate_uid()
        ds.RequestedProcedureID = values.get("procedure", "RP-1")
        ds.RequestedProcedureDescription = "CT chest"
        ds.ReferringPhysicianName = "Local^Referrer"
        step = Dataset()
        step.ScheduledStationAETitle = "CT1"
        step.ScheduledProcedureStepStartDate = "20240115"
        step.ScheduledProcedureStepStartTime = "1000"
        step.Modality = "CT"
        step.ScheduledPerformingPhysicianName = "Local^Radiographer"
        step.ScheduledProcedureStepDescription = "CT chest"
        step.ScheduledProcedureStepID = values.get("step", "SPS-1")
        ds.ScheduledProcedureStepSequence = [step]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(self.folder / f"{generate_uid()}.wl", enforce_file_format=True)

    @property
    def queries(self) -> int:
        """wlmscpfs writes each C-FIND request it answers to the request folder."""
        return len(list(self.requests.iterdir()))


@pytest.fixture
def worklist(tmp_path: Path) -> Iterator[Worklist]:
    folder = tmp_path / "worklists" / RIS
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    requests = tmp_path / "wl-requests"
    requests.mkdir()
    port = free_port()
    arguments = ["--single-process", "-csk", "-dfp", str(folder.parent), "-rfp", str(requests)]
    with dcmtk_peer("wlmscpfs", *arguments, str(port), port=port):
        yield Worklist(folder, requests, port)


def _foreign_study(dimse: Dimse, spec: StudySpec, count: int = 2) -> int:
    """The study as another institution sent it into Ferry; returns that institution's pk."""
    engine = dimse.archive.engine
    with Session(engine) as session:
        sender = Institution(code="STMARY", name=SENDER_NAME)
        session.add(sender)
        session.commit()
        assert sender.pk is not None
        sender_pk = sender.pk
    spool = dimse.web.settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = spool / f"{generate_uid()}.dcm"
        # Declared ASCII: a local name with umlauts then needs another character set.
        instance = ct_slice(spec=replace(spec, instance_number=number + 1))
        instance.SpecificCharacterSet = "ISO_IR 6"
        instance.save_as(path)
        paths.append(path)
    outcomes = dimse.archive.store_files(paths, institution_pk=sender_pk)
    assert all(outcome.stored for outcome in outcomes)
    return sender_pk


def _destination(dimse: Dimse, worklist_port: int, **worklist_values: Any) -> NodeFacts:
    ris = dimse.add_node(RIS, port=worklist_port, **({"worklist": True} | worklist_values))
    dimse.add_node("HOSP_PACS", reconcile_with_pk=ris)
    node = get_node(dimse.archive.engine, dimse.nodes["HOSP_PACS"])
    assert node is not None
    return node


def _instances(dimse: Dimse, study_uid: str) -> list[Dataset]:
    stored = dimse.archive.find_instances(study_uid)
    return [read_dataset(dimse.archive, instance) for instance in stored]


def _context(dimse: Dimse, **settings: Any) -> BridgeContext:
    settings = replace_settings(dimse.web.settings, **settings)
    return BridgeContext(settings.dimse(), dimse.archive, dimse.clock)


def _round_trip(ds: Dataset) -> Dataset:
    """What the destination receives: the dataset written as a file and read back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


FOREIGN = StudySpec(
    patient_name="Mueller^Juergen",
    patient_id="STM-77",
    patient_birth_date="19610304",
    patient_sex="M",
    accession_number="STM-ACC-9",
)


def test_match_by_accession_coerces_and_keeps_the_originals(
    dimse: Dimse, worklist: Worklist
) -> None:
    spec = replace(FOREIGN, study_uid=generate_uid())
    _foreign_study(dimse, spec)
    # One order with two procedure steps is still one order.
    for step in ("SPS-1", "SPS-2"):
        worklist.add_order(
            accession="STM-ACC-9",
            patient_id="L-4711",
            name="Müller^Jürgen",
            birth_date="19610304",
            step=step,
        )
    worklist.add_order(accession="OTHER", patient_id="L-1")
    node = _destination(dimse, worklist.port)

    reconciler = reconciler_for(_context(dimse), node, spec.study_uid)
    assert reconciler is not None
    originals = _instances(dimse, spec.study_uid)
    coerced = [_round_trip(reconciler.coerce(ds)) for ds in originals]

    for ds in coerced:
        assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == (
            "L-4711",
            "HOSP",
            "STM-ACC-9",
        )
        assert (str(ds.PatientName), ds.SpecificCharacterSet) == ("Müller^Jürgen", "ISO_IR 192")
        assert (ds.PatientBirthDate, ds.PatientSex) == ("19610304", "O")
        assert ds.StudyInstanceUID == spec.study_uid  # the study stays the same study
        [item] = ds.OriginalAttributesSequence
        assert (item.ModifyingSystem, item.ReasonForTheAttributeModification) == ("FERRY", "COERCE")
        assert item.SourceOfPreviousValues == SENDER_NAME
        assert item.AttributeModificationDateTime
        [old] = item.ModifiedAttributesSequence
        assert (old.PatientID, str(old.PatientName)) == ("STM-77", "Mueller^Juergen")
        assert old.PatientSex == "M"
        assert old.IssuerOfPatientID in (None, "")  # the sender had none
        assert "AccessionNumber" not in old  # unchanged, so not recorded
        assert "PatientBirthDate" not in old
        assert ds.pixel_array.shape == (64, 64)
    # What was read from the store is untouched.
    assert (originals[0].PatientID, originals[0].SpecificCharacterSet) == ("STM-77", "ISO_IR 6")

    assert worklist.queries == 1
    [event] = audit_events(dimse, "reconcile")
    assert (event.actor, event.outcome, event.study_uid) == ("ferry", "allowed", spec.study_uid)
    assert event.institution_pk == node.institution_pk
    detail = json.loads(event.detail)
    assert detail["matched_by"] == "accession"
    assert detail["before"]["PatientID"] == "STM-77"
    assert detail["after"] == {
        "PatientID": "L-4711",
        "IssuerOfPatientID": "HOSP",
        "AccessionNumber": "STM-ACC-9",
    }


@sqlite_only
def test_match_by_demographics_when_the_accession_is_unknown(
    dimse: Dimse, worklist: Worklist
) -> None:
    spec = replace(FOREIGN, study_uid=generate_uid())
    _foreign_study(dimse, spec, count=1)
    worklist.add_order(
        accession="HOSP-555",
        patient_id="L-9",
        name="Mueller^Juergen",
        birth_date="19610304",
        sex="M",
    )
    worklist.add_order(name="Mueller^Juergen", birth_date="19610304", sex="F", patient_id="L-8")
    reconciler = reconciler_for(_context(dimse), _destination(dimse, worklist.port), spec.study_uid)
    assert reconciler is not None

    [ds] = [reconciler.coerce(ds) for ds in _instances(dimse, spec.study_uid)]

    assert (ds.PatientID, ds.AccessionNumber) == ("L-9", "HOSP-555")
    [old] = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence
    assert (old.PatientID, old.AccessionNumber) == ("STM-77", "STM-ACC-9")
    assert worklist.queries == 2  # by accession (nothing), then by name, birth date and sex
    [event] = audit_events(dimse, "reconcile")
    assert json.loads(event.detail)["matched_by"] == "demographics"


@sqlite_only
def test_no_single_order_is_no_worklist_match(dimse: Dimse, worklist: Worklist) -> None:
    context = _context(dimse)
    node = _destination(dimse, worklist.port)
    unknown = replace(FOREIGN, study_uid=generate_uid(), patient_name="Nobody^Known")
    _foreign_study(dimse, unknown, count=1)
    reconciler = reconciler_for(context, node, unknown.study_uid)
    assert reconciler is not None
    [ds] = _instances(dimse, unknown.study_uid)
    for _ in range(2):  # asked once; the answer is kept for the study
        with pytest.raises(NoWorklistMatch, match="'STM-ACC-9', and no order is for patient No"):
            reconciler.coerce(ds)
    assert worklist.queries == 2

    twins = replace(FOREIGN, study_uid=generate_uid(), accession_number="")
    for patient_id in ("L-1", "L-2"):
        worklist.add_order(patient_id=patient_id, name="Mueller^Juergen", birth_date="19610304")
    ambiguous = reconciler_for(context, node, twins.study_uid)
    assert ambiguous is not None
    with pytest.raises(NoWorklistMatch, match="2 different worklist orders match patient"):
        ambiguous.coerce(ct_slice(spec=replace(twins, patient_sex="")))

    events = audit_events(dimse, "reconcile")
    assert [(event.outcome, event.rule) for event in events] == [
        ("failed", "no-worklist-match")
    ] * 2


@sqlite_only
def test_nodes_without_a_worklist(dimse: Dimse) -> None:
    context = _context(dimse)
    plain = dimse.add_node("PLAIN_PACS")
    node = get_node(dimse.archive.engine, plain)
    assert node is not None
    assert reconciler_for(context, node, generate_uid()) is None

    not_a_ris = _destination(dimse, free_port(), worklist=False)
    reconciler = reconciler_for(context, not_a_ris, generate_uid())
    assert reconciler is not None
    with pytest.raises(NoWorklistMatch, match="RIS is not marked as a worklist"):
        reconciler.coerce(ct_slice())


@sqlite_only
def test_a_silent_worklist_is_an_error_not_a_hang(dimse: Dimse) -> None:
    context = _context(dimse, dicom_acse_timeout=1, dicom_dimse_timeout=1, dicom_network_timeout=1)
    with silent_peer() as port:
        reconciler = reconciler_for(context, _destination(dimse, port), generate_uid())
        assert reconciler is not None
        with pytest.raises(WorklistUnavailable, match="the worklist could not be asked: RIS"):
            reconciler.coerce(ct_slice())
