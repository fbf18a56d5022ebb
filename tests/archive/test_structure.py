"""The structural walk of a received data set, and what the archive refuses because of it."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from archive import outcomes
from archive.parse import InvalidInstance, read_received
from archive.structure import DataSetTruncated, MalformedDataSet, walk_data_set
from tests import factories

NATIVE_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]
PADDING = struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, 6) + b"\x00" * 6  # (FFFC,FFFC)


def walk(data: bytes, syntax: str | None = ExplicitVRLittleEndian) -> object:
    return walk_data_set(io.BytesIO(data), len(data), syntax)


def small_ct(syntax: str) -> Dataset:
    ds = factories.with_bulk_elements()  # nested sequences, a private UN, an overlay
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_a_whole_data_set_walks_to_its_end_in_every_encoding(syntax: str) -> None:
    data = factories.part10_bytes(small_ct(syntax))
    pixel = walk(data, syntax)
    assert pixel is not None and not pixel.encapsulated  # type: ignore[attr-defined]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("percent", [30, 45, 60, 75, 90, 99])
def test_a_data_set_cut_anywhere_is_truncated_at_its_last_byte(syntax: str, percent: int) -> None:
    data = factories.part10_bytes(small_ct(syntax))
    cut = data[: len(data) * percent // 100]
    with pytest.raises(DataSetTruncated, match=f"^data set truncated at byte {len(cut)} "):
        walk(cut, syntax)


def test_a_deflated_data_set_cut_short_is_truncated() -> None:
    data = factories.part10_bytes(small_ct(DeflatedExplicitVRLittleEndian))
    with pytest.raises(MalformedDataSet, match=r"truncated|inflated"):
        walk(data[: len(data) * 3 // 4], DeflatedExplicitVRLittleEndian)


def test_a_bare_data_set_walks_like_a_file() -> None:
    data = factories.without_file_meta_bytes(factories.ct_slice())
    assert walk(data, None) is not None
    with pytest.raises(DataSetTruncated):
        walk(data[:-3], None)


@pytest.mark.parametrize("kind", ["jpeg_baseline", "rle", "jpeg2000"])
def test_encapsulated_pixel_data_ends_at_its_delimiter_and_padding_may_follow(kind: str) -> None:
    data = factories.part10_bytes(getattr(factories, kind)())
    assert walk(data + PADDING).encapsulated  # type: ignore[attr-defined]
    with pytest.raises(DataSetTruncated, match="fragment"):
        walk(data[:-20])
    with pytest.raises(DataSetTruncated):
        walk(data + PADDING[:-2])


def test_a_sequence_item_longer_than_its_sequence_is_malformed() -> None:
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 16)  # 16 bytes of items
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 40) + b"\x00" * 8  # claims 40
    with pytest.raises(MalformedDataSet, match="runs past"):
        walk(sequence + item)


# -- what the archive refuses -------------------------------------------------------------


def received(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "part.dcm"
    path.write_bytes(data)
    return path


def test_a_16x16_ct_cut_at_60_percent_is_refused_as_truncated(tmp_path: Path) -> None:
    data = factories.part10_bytes(factories.ct_slice(16, 16))
    cut = data[: len(data) * 60 // 100]
    with pytest.raises(InvalidInstance) as refused:
        read_received(received(tmp_path, cut))
    assert refused.value.reason == outcomes.CANNOT_UNDERSTAND
    assert refused.value.message.startswith(f"data set truncated at byte {len(cut)} ")


def test_an_image_without_pixel_data_does_not_match_its_sop_class(tmp_path: Path) -> None:
    ds = factories.ct_slice()
    del ds.PixelData
    with pytest.raises(InvalidInstance) as refused:
        read_received(received(tmp_path, factories.part10_bytes(ds)))
    assert refused.value.reason == outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS == 0xA900
    assert "PixelData" in refused.value.message and "CT Image Storage" in refused.value.message


def test_native_pixel_data_shorter_than_its_frames_does_not_match(tmp_path: Path) -> None:
    ds = factories.mr_multiframe(frames=2)
    ds.NumberOfFrames = 3
    with pytest.raises(InvalidInstance) as refused:
        read_received(received(tmp_path, factories.part10_bytes(ds)))
    assert refused.value.reason == outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "NumberOfFrames" in refused.value.message and "PixelData holds" in refused.value.message


def test_single_bit_pixel_data_is_counted_packed(tmp_path: Path) -> None:
    ds = factories.single_bit_multiframe(frames=3, rows=5, columns=5)  # 75 bits: 10 bytes
    read_received(received(tmp_path, factories.part10_bytes(ds)))
    ds.NumberOfFrames = 4  # 100 bits: 13 bytes, more than the 10 (padded to 10) there are
    with pytest.raises(InvalidInstance, match="need 13"):
        read_received(received(tmp_path, factories.part10_bytes(ds)))


def test_pixel_data_without_rows_names_the_attribute(tmp_path: Path) -> None:
    ds = factories.ct_slice()
    del ds.Rows
    with pytest.raises(InvalidInstance) as refused:
        read_received(received(tmp_path, factories.part10_bytes(ds)))
    assert refused.value.reason == outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "Rows is missing" in refused.value.message


def test_a_document_needs_no_pixel_data(tmp_path: Path) -> None:
    parsed = read_received(received(tmp_path, factories.part10_bytes(factories.encapsulated_pdf())))
    assert parsed.pixel_vr is None
