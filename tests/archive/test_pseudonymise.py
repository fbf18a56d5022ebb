"""Pseudonymised copies of instances: the basic profile of PS3.15 Annex E, a profile's
additions, and keyed pseudonyms that hold across copies."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from archive.pseudonymise import (
    BASIC,
    Dates,
    PrivateTags,
    Profile,
    new_uid,
    pseudonymise_dataset,
    pseudonymise_file,
    shift_days,
    standard_action,
    tag_of,
)
from foundation.errors import CannotPseudonymise
from tests import factories
from tests.factories import StudySpec

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def _slice(spec: StudySpec | None = None, number: int = 1) -> Dataset:
    ds = factories.ct_slice(spec=spec or StudySpec(patient_id="P-1", patient_name="Doe^Jane"))
    ds.InstanceNumber = number
    return ds


def _with_references(ds: Dataset, referenced: Dataset) -> Dataset:
    """A slice that points at another (Source Image Sequence), with an operator nested in a
    kept sequence, private data, and an overlay."""
    source = Dataset()
    source.ReferencedSOPClassUID = referenced.SOPClassUID
    source.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
    ds.SourceImageSequence = [source]
    equipment = Dataset()
    equipment.Manufacturer = "ACME"
    equipment.OperatorsName = "Tech^Tina"
    ds.ContributingEquipmentSequence = [equipment]
    block = ds.private_block(0x0009, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", "patient's favourite colour")
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 8)  # Overlay Data
    ds.add_new(0x60000010, "US", 4)  # Overlay Rows
    ds.AnnotationGroupUID = "1.2.3.4"  # D in the table
    return ds


def test_the_table_is_the_standards() -> None:
    assert standard_action(tag_of("PatientBirthDate")) == "Z"
    assert standard_action(tag_of("SOPInstanceUID")) == "U"
    assert standard_action(tag_of("RequestAttributesSequence")) == "X"
    assert standard_action(tag_of("SOPClassUID")) == "K"  # not in the table: kept
    assert standard_action(tag_of("(6000,3000)")) == "X"  # overlays, by the table's mask
    assert standard_action(tag_of("(6002,3000)")) == "X"


def test_the_basic_profile_removes_who_the_patient_is_at_every_level() -> None:
    first = _slice()
    ds = _with_references(_slice(number=2), first)
    original_study = ds.StudyInstanceUID
    pseudonymise_dataset(ds, BASIC, KEY)
    assert ds.PatientID.startswith("PSN") and ds.PatientName == ds.PatientID
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
    assert not ds.get("AccessionNumber") and not ds.get("StudyDate")
    assert ds.StudyInstanceUID == new_uid(KEY, original_study)
    assert ds.ContributingEquipmentSequence[0].OperatorsName == "REMOVED"  # nested, cleaned
    assert ds.AnnotationGroupUID == new_uid(KEY, "1.2.3.4")  # D on a UID: still a valid UID
    assert ds.ContributingEquipmentSequence[0].Manufacturer == "ACME"  # nested, kept
    # The reference follows the referenced instance's own copy.
    pseudonymise_dataset(first, BASIC, KEY)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert not any(tag.is_private for tag in ds)
    assert 0x60003000 not in ds  # Overlay Data, by the table (its Rows are not listed)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert UID(uid).is_valid and len(uid) <= 64


def test_a_profile_keeps_removes_and_sets_what_it_says() -> None:
    profile = Profile(
        "teaching",
        keep=frozenset({tag_of("PatientSex"), tag_of("StudyDescription")}),
        remove=frozenset({tag_of("Modality")}),
        replace={
            tag_of("InstitutionName"): "TEACHING FILE",
            tag_of("ClinicalTrialProtocolID"): "COHORT-3",
        },
        private_tags=PrivateTags.KEEP,
    )
    ds = _with_references(_slice(StudySpec(patient_sex="M", study_description="Knee")), _slice())
    pseudonymise_dataset(ds, profile, KEY)
    assert (ds.PatientSex, ds.StudyDescription) == ("M", "Knee")
    assert "Modality" not in ds and ds.InstitutionName == "TEACHING FILE"
    assert ds.ClinicalTrialProtocolID == "COHORT-3"  # absent from the original: added
    assert ds[0x00091001].value == "patient's favourite colour"
    assert ds.DeidentificationMethod == "Ferry pseudonymisation, profile teaching"
    assert "113111" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


def test_dates_are_removed_shifted_per_patient_or_kept() -> None:
    one, two = StudySpec(patient_id="P-1"), StudySpec(patient_id="P-2")
    shift = Profile("shifted", dates=Dates.SHIFT)
    a, b, c = _slice(one), _slice(one, 2), _slice(two)
    for ds in (a, b, c):
        pseudonymise_dataset(ds, shift, KEY)
    days = shift_days(KEY, "P-1")
    assert 1 <= days <= 3650
    assert a.StudyDate == b.StudyDate < one.study_date  # one patient: the same shift
    assert a.StudyTime == one.study_time  # times are kept with shifted dates
    assert c.StudyDate != a.StudyDate  # another patient, another shift
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    kept = _slice(one)
    pseudonymise_dataset(kept, Profile("dated", dates=Dates.KEEP), KEY)
    assert kept.StudyDate == one.study_date
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_pseudonyms_hold_for_one_key_and_differ_between_keys() -> None:
    spec = StudySpec(patient_id="P-9")
    first, again, other = _slice(spec), _slice(spec), _slice(spec)
    pseudonymise_dataset(first, BASIC, KEY)
    pseudonymise_dataset(again, BASIC, KEY)
    pseudonymise_dataset(other, BASIC, OTHER_KEY)
    assert (first.PatientID, first.StudyInstanceUID) == (again.PatientID, again.StudyInstanceUID)
    assert first.PatientID != other.PatientID
    assert first.StudyInstanceUID != other.StudyInstanceUID


def test_burned_in_annotation_is_refused() -> None:
    ds = _slice()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(CannotPseudonymise, match="burned-in annotation"):
        pseudonymise_dataset(ds, BASIC, KEY)


@pytest.mark.parametrize("make", [factories.jpeg_baseline, factories.ct_slice])
def test_a_file_keeps_its_encoding_and_its_pixels(tmp_path: Path, make: object) -> None:
    source = tmp_path / "in.dcm"
    source.write_bytes(factories.part10_bytes(make()))  # type: ignore[operator]
    original = dcmread(source)
    target = io.BytesIO()
    study = pseudonymise_file(source, target, BASIC, KEY)
    copy = dcmread(io.BytesIO(target.getvalue()))
    assert study == copy.StudyInstanceUID == new_uid(KEY, original.StudyInstanceUID)
    assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID
    assert copy.PixelData == original.PixelData  # compressed frames byte for byte
    assert original.PatientID.encode() not in target.getvalue()


def _whole_read_copy(raw: bytes) -> bytes:
    """The copy as a whole-dataset read and write makes it: what the streamed copy must equal."""
    dataset = dcmread(io.BytesIO(raw))
    pseudonymise_dataset(dataset, BASIC, KEY)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    dataset.file_meta = meta
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        factories.ct_slice,
        factories.jpeg_baseline,
        factories.jpeg2000,
        lambda: factories.mr_multiframe(),
        lambda: _implicit(factories.ct_slice()),
    ],
)
def test_the_pixel_data_is_streamed_and_the_copy_is_the_whole_reads(make: Any) -> None:
    raw = factories.part10_bytes(make())
    streamed = io.BytesIO()
    pseudonymise_file(io.BytesIO(raw), streamed, BASIC, KEY)
    assert streamed.getvalue() == _whole_read_copy(raw)


def test_what_follows_the_pixel_data_is_left_out(tmp_path: Path) -> None:
    ds = factories.ct_slice()
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)  # Data Set Trailing Padding, after the pixels
    source = tmp_path / "padded.dcm"
    source.write_bytes(factories.part10_bytes(ds))
    copy = io.BytesIO()
    pseudonymise_file(source, copy, BASIC, KEY)
    read = dcmread(io.BytesIO(copy.getvalue()))
    assert 0xFFFCFFFC not in read and read.PixelData == ds.PixelData


def test_a_deflated_data_set_is_read_whole_and_copied(tmp_path: Path) -> None:
    ds = factories.ct_slice()
    source = tmp_path / "deflated.dcm"
    deflated = dcmread(io.BytesIO(factories.part10_bytes(ds)))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(source, enforce_file_format=True)
    copy = io.BytesIO()
    pseudonymise_file(source, copy, BASIC, KEY)
    read = dcmread(io.BytesIO(copy.getvalue()))
    assert read.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert read.PatientID.startswith("PSN") and read.PixelData == ds.PixelData


def test_a_large_instance_is_copied_without_its_frames_in_memory(tmp_path: Path) -> None:
    ds = factories.ct_slice(rows=2048, columns=2048)  # 8 MiB of pixels
    source = tmp_path / "large.dcm"
    source.write_bytes(factories.part10_bytes(ds))
    del ds
    tracemalloc.start()
    try:
        pseudonymise_file(source, tmp_path / "copy.dcm", BASIC, KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024 * 1024  # a chunk of 1 MiB and the attributes, not 8 MiB of frames
    assert dcmread(tmp_path / "copy.dcm").PixelData == dcmread(source).PixelData


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds
