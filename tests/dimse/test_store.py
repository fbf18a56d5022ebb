"""C-STORE from DCMTK's storescu in several transfer syntaxes, read back over DICOMweb.

What a modality sends is what Ferry keeps: the data set bytes of each stored file equal those
storescu read from its file (Ferry only puts its own File Meta Information in front).
"""

from __future__ import annotations

import io
import struct
from dataclasses import replace
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE
from sqlmodel import Session, select

from audit.models import AuditEvent
from tests import factories
from tests.conftest import sqlite_only
from tests.dimse.conftest import Dimse, run_dcmtk


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _deflated(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _data_set_bytes(data: bytes) -> bytes:
    """A Part 10 file's bytes after its File Meta Information group."""
    assert data[128:132] == b"DICM"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def _study(folder: Path) -> tuple[factories.StudySpec, dict[str, Path]]:
    spec = factories.StudySpec(patient_id="DIMSE-STORE")
    makers = [
        lambda s: factories.ct_slice(spec=s),
        lambda s: _implicit(factories.ct_slice(spec=s)),
        lambda s: _deflated(factories.ct_slice(spec=s)),
        lambda s: factories.jpeg_baseline(spec=s),
        lambda s: factories.jpeg2000(spec=s),
        lambda s: factories.rle(spec=s),
        lambda s: factories.mr_multiframe(spec=s),
        lambda s: factories.encapsulated_pdf(spec=s),
        lambda s: factories.mpeg4_video(spec=s),
    ]
    files = {}
    for number, make in enumerate(makers, start=1):
        instance = make(replace(spec.new_series(number), instance_number=1))
        path = folder / f"{number:02d}.dcm"
        instance.save_as(path, enforce_file_format=True)
        files[str(instance.SOPInstanceUID)] = path
    return spec, files


def _profile(files: dict[str, Path], path: Path) -> Path:
    """A storescu profile proposing each file's SOP class in the file's own transfer syntax.

    storescu's built-in proposals are uncompressed only (or one compressed family per run).
    """
    pairs = set()
    for file in files.values():
        ds = dcmread(file, stop_before_pixels=True)
        pairs.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    syntaxes = sorted({syntax for _, syntax in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for number, syntax in enumerate(syntaxes):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Study]"]
    for number, (sop_class, syntax) in enumerate(sorted(pairs), start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[Study]", "PresentationContexts = Study"]
    path.write_text("\n".join(lines) + "\n")
    return path


@sqlite_only
def test_what_storescu_sends_is_kept_as_sent(dimse: Dimse, tmp_path: Path) -> None:
    folder = tmp_path / "modality"
    folder.mkdir()
    spec, files = _study(folder)
    echo = run_dcmtk("echoscu", "-aet", "MODALITY", "-aec", dimse.ae_title, "127.0.0.1",
                     str(dimse.port))  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    profile = _profile(files, tmp_path / "storescu.cfg")
    sent = run_dcmtk("storescu", "-xf", str(profile), "Study", "-aet", "MODALITY", "-aec",
                     dimse.ae_title, "+sd", "127.0.0.1", str(dimse.port), str(folder))  # fmt: skip
    assert sent.returncode == 0, sent.stderr

    stored = {s.sop_instance_uid: s for s in dimse.archive.find_instances(spec.study_uid)}
    assert set(stored) == set(files)
    for uid, path in files.items():
        sent_bytes = path.read_bytes()
        with dimse.archive.blobs.open(stored[uid].blob_key) as blob:
            kept = blob.read()
        expected_syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert stored[uid].transfer_syntax_uid == expected_syntax
        if expected_syntax == DeflatedExplicitVRLittleEndian:  # DCMTK deflates it anew
            assert dcmread(io.BytesIO(kept)).PixelData == dcmread(path).PixelData
        else:
            assert _data_set_bytes(kept) == _data_set_bytes(sent_bytes), uid

    with dimse.web.http() as http:
        found = http.get(f"{dimse.web.dicomweb_url}/studies", params={"PatientID": "DIMSE-STORE"})
        assert found.status_code == 200
        [study] = found.json()
        assert study["00201208"]["Value"] == [len(files)]  # NumberOfStudyRelatedInstances
        series = http.get(f"{dimse.web.dicomweb_url}/studies/{spec.study_uid}/series")
        assert len(series.json()) == len(files)
        jpeg = next(s for s in stored.values() if s.transfer_syntax_uid.endswith(".4.50"))
        retrieved = http.get(
            f"{dimse.web.dicomweb_url}/studies/{spec.study_uid}/series/"
            f"{jpeg.series_instance_uid}/instances/{jpeg.sop_instance_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert retrieved.status_code == 200
        assert _data_set_bytes(files[jpeg.sop_instance_uid].read_bytes()) in retrieved.content

    with Session(dimse.archive.engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "store")).all()
    assert len(events) == 1  # folded: one event for the study and the association
    assert events[0].outcome == "allowed" and events[0].patient_id == "DIMSE-STORE"
    assert '"instances":9' in events[0].detail and '"calling_ae":"MODALITY"' in events[0].detail


@sqlite_only
def test_retired_and_newer_storage_classes_are_negotiated(dimse: Dimse) -> None:
    """A 1993 ultrasound image is stored; a non-patient object is taken in, then refused."""
    retired_us = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
    implant_template = "1.2.840.10008.5.1.4.43.1"  # Generic Implant Template Storage
    ae = AE("MODALITY")
    for sop_class in (retired_us, implant_template):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    ultrasound = factories.ct_slice(spec=factories.StudySpec(modality="US"))
    ultrasound.SOPClassUID = ultrasound.file_meta.MediaStorageSOPClassUID = retired_us
    template = Dataset()
    template.SOPClassUID = implant_template
    template.SOPInstanceUID = generate_uid()
    template.file_meta = FileMetaDataset()
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ultrasound).Status == 0x0000
        refused = assoc.send_c_store(template)
    finally:
        assoc.release()
    assert refused.Status == 0xA900 and "StudyInstanceUID" in refused.ErrorComment
    [kept] = dimse.archive.find_instances(ultrasound.StudyInstanceUID)
    assert kept.sop_class_uid == retired_us
