"""Tests for the test-data factories: every instance round-trips and decodes."""

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests import factories
from tests.factories import CHARSET_NAMES, StudySpec

# PatientName bytes on the wire; Japanese is the example of PS3.5 H.3.1, the rest Python's codecs.
EXPECTED_NAME_BYTES = {
    "ISO_IR 100": CHARSET_NAMES["ISO_IR 100"].encode("latin_1"),
    "ISO_IR 144": CHARSET_NAMES["ISO_IR 144"].encode("iso8859_5"),
    "ISO_IR 192": CHARSET_NAMES["ISO_IR 192"].encode("utf_8"),
    "ISO 2022 IR 87": (
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
    ),
    "GB18030": CHARSET_NAMES["GB18030"].encode("gb18030"),
}


def reread(ds: Dataset) -> Dataset:
    return dcmread(io.BytesIO(factories.part10_bytes(ds)))


def test_ct_slice_round_trips_as_part10_file():
    ds = factories.ct_slice(rows=16, columns=24)
    data = factories.part10_bytes(ds)
    back = dcmread(io.BytesIO(data))
    assert data[128:132] == b"DICM"
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.SOPClassUID == CTImageStorage
    assert back.pixel_array.shape == (16, 24)
    assert back.pixel_array.dtype == np.int16
    assert back.pixel_array.min() < 0
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def test_fresh_uids_and_pixels_vary_per_instance():
    first = factories.ct_slice()
    second = factories.ct_slice(spec=StudySpec(instance_number=2))
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert not np.array_equal(first.pixel_array, second.pixel_array)
    assert first.ImagePositionPatient != second.ImagePositionPatient


def test_overrides_apply_last_and_keep_file_meta_in_step():
    ds = factories.ct_slice(PatientName="Override^Olga", SOPInstanceUID="1.2.3.4")
    assert ds.PatientName == "Override^Olga"
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        factories.ct_slice(PatientNmae="Typo")


def test_mr_multiframe_has_frames():
    back = reread(factories.mr_multiframe(frames=4, rows=8, columns=8))
    assert back.NumberOfFrames == 4
    assert back.Modality == "MR"
    assert back.pixel_array.shape == (4, 8, 8)
    assert len(back.SliceLocationVector) == 4


@pytest.mark.parametrize(
    ("factory", "transfer_syntax"),
    [
        (lambda: factories.jpeg2000(lossless=True), JPEG2000Lossless),
        (factories.rle, RLELossless),
    ],
    ids=["jpeg2000", "rle"],
)
def test_lossless_codecs_decode_to_the_ct_pixels(
    factory: Callable[[], Dataset], transfer_syntax: str
):
    ds = factory()
    back = reread(ds)
    assert back.file_meta.TransferSyntaxUID == transfer_syntax
    expected = factories.ct_slice(spec=StudySpec(instance_number=ds.InstanceNumber))
    np.testing.assert_array_equal(back.pixel_array, expected.pixel_array)
    assert back.pixel_array.dtype == np.int16


def test_lossy_jpeg2000_decodes_close_and_is_marked_lossy():
    back = reread(factories.jpeg2000(lossless=False))
    expected = factories.ct_slice().pixel_array.astype(int)
    assert back.file_meta.TransferSyntaxUID == JPEG2000
    assert back.LossyImageCompression == "01"
    assert np.abs(back.pixel_array.astype(int) - expected).mean() < 50


def test_jpeg_baseline_is_baseline_and_decodes():
    ds = factories.jpeg_baseline(rows=32, columns=48)
    back = reread(ds)
    frame = next(generate_frames(back.PixelData, number_of_frames=1))
    assert back.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert frame.startswith(b"\xff\xd8") and b"\xff\xc0" in frame  # SOI, SOF0
    assert back.pixel_array.shape == (32, 48)
    assert back.pixel_array.dtype == np.uint8
    expected = (np.add.outer(np.arange(32) * 37, np.arange(48) * 11) + 1) % 256
    assert np.abs(back.pixel_array.astype(int) - expected).mean() < 20


def test_encapsulated_pdf_round_trips():
    back = reread(factories.encapsulated_pdf())
    assert back.SOPClassUID == EncapsulatedPDFStorage
    assert back.EncapsulatedDocument.startswith(b"%PDF-")
    assert back.EncapsulatedDocument.rstrip(b"\x00").rstrip().endswith(b"%%EOF")
    assert back.EncapsulatedDocumentLength <= len(back.EncapsulatedDocument)


def test_encapsulated_pdf_keeps_odd_document_length():
    back = reread(factories.encapsulated_pdf(b"%PDF-1.4\n%%EOF"))
    assert back.EncapsulatedDocumentLength == 14
    assert back.EncapsulatedDocument[:14] == b"%PDF-1.4\n%%EOF"


@pytest.mark.parametrize("charset", list(CHARSET_NAMES))
def test_charset_text_is_encoded_in_that_charset(charset: str):
    data = factories.part10_bytes(factories.with_charset(charset))
    back = dcmread(io.BytesIO(data))
    assert str(back.PatientName) == CHARSET_NAMES[charset]
    assert back.StudyDescription == factories.CHARSET_DESCRIPTIONS[charset]
    assert EXPECTED_NAME_BYTES[charset] in data
    if charset != "ISO_IR 192":
        assert CHARSET_NAMES[charset].encode("utf_8") not in data


def test_japanese_charset_starts_with_the_default_repertoire():
    back = reread(factories.with_charset("ISO 2022 IR 87"))
    assert back.SpecificCharacterSet == ["", "ISO 2022 IR 87"]


def test_unknown_charset_is_refused():
    with pytest.raises(ValueError, match="ISO_IR 13"):
        factories.with_charset("ISO_IR 13")


def test_private_tags_and_nested_sequences_round_trip():
    back = reread(factories.with_private_tags())
    block = back.private_block(factories.PRIVATE_GROUP, factories.PRIVATE_CREATOR)
    assert block[0x01].value == "Ferry private text"
    assert block[0x02].VR == "OB"
    assert len(block[0x02].value) == factories.PRIVATE_OB_LENGTH
    assert block[0x03].value[0].CodeValue == "121311"
    references = back.ReferencedImageSequence
    assert len(references) == 2
    assert references[1].PurposeOfReferenceCodeSequence[0].CodeMeaning == "Localizer"


def test_bare_dataset_has_no_preamble_or_meta_and_reads_with_force():
    ds = factories.ct_slice()
    data = factories.without_file_meta_bytes(ds)
    assert data[:4] == b"\x08\x00\x05\x00"  # (0008,0005) first, in implicit VR
    assert b"DICM" not in data[:200]
    assert b"\x02\x00\x10\x00" not in data  # no (0002,0010) Transfer Syntax UID
    with pytest.raises(InvalidDicomError):
        dcmread(io.BytesIO(data))
    back = dcmread(io.BytesIO(data), force=True)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    back.file_meta = FileMetaDataset()
    back.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def test_bare_dataset_refuses_encapsulated_pixel_data():
    with pytest.raises(ValueError, match="explicit VR"):
        factories.without_file_meta_bytes(factories.rle())


def test_odd_length_value_is_odd_on_the_wire_and_still_readable():
    data = factories.odd_length_value_bytes()
    offset = data.index(b"\x08\x00\x30\x10LO")
    length = int.from_bytes(data[offset + 6 : offset + 8], "little")
    assert length == 9
    assert data[offset + 8 : offset + 8 + length] == b"ODD VALUE"
    back = dcmread(io.BytesIO(data))
    assert back.StudyDescription == "ODD VALUE"
    assert back.pixel_array.shape == (64, 64)


def test_odd_length_value_refuses_an_even_value():
    with pytest.raises(ValueError, match="odd length"):
        factories.odd_length_value_bytes(StudyDescription="EVEN")


def test_write_series_writes_one_series(tmp_path: Path):
    paths = factories.write_series(tmp_path / "series", 3)
    instances = [dcmread(path) for path in paths]
    assert len({ds.SeriesInstanceUID for ds in instances}) == 1
    assert len({ds.SOPInstanceUID for ds in instances}) == 3
    assert [ds.InstanceNumber for ds in instances] == [1, 2, 3]
    assert all(
        path.name == f"{ds.SOPInstanceUID}.dcm" for path, ds in zip(paths, instances, strict=True)
    )


def test_study_shares_patient_and_study():
    instances = factories.study(n_series=2, per_series=3, PatientID="P-42")
    assert len(instances) == 6
    assert {ds.PatientID for ds in instances} == {"P-42"}
    assert len({ds.StudyInstanceUID for ds in instances}) == 1
    assert len({ds.SeriesInstanceUID for ds in instances}) == 2
    assert sorted({ds.SeriesNumber for ds in instances}) == [1, 2]
    assert len({ds.SOPInstanceUID for ds in instances}) == 6
