"""Frames and bulk data found in stored files, checked against pydicom's own reading."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from archive.blobstore import FilesystemBlobStore
from archive.bulkdata import BulkDataNotFound, iter_bulk_value, locate_bulk_value, parse_bulk_path
from archive.framecache import LayoutMemory, open_pixel_data, read_layout
from archive.frames import FramesUnavailable, NoPixelData, locate_frames, read_frame
from foundation.errors import InvalidQuery
from tests import factories


def stored_frames(ds: Dataset) -> list[bytes]:
    """What each frame is, by pydicom: encapsulated as generate_frames splits it, native as
    pixel_array gives it (bit-packed frames packed again, since that is how they are stored)."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return list(
            generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended)
        )
    pixels = ds.pixel_array.reshape(count, *ds.pixel_array.shape[-2:])
    if ds.BitsAllocated == 1:
        return [pack_bits(frame) for frame in pixels]
    return [frame.tobytes() for frame in pixels]


def layout_and_frames(ds: Dataset) -> tuple[object, list[bytes]]:
    handle = io.BytesIO(factories.part10_bytes(ds))
    layout = locate_frames(handle)
    return layout, [read_frame(handle, location) for location in layout.frames]


KINDS: dict[str, Callable[[], Dataset]] = {
    "ct": factories.ct_slice,
    "mr-multiframe": factories.mr_multiframe,
    "single-bit-multiframe": factories.single_bit_multiframe,
    "jpeg-baseline": factories.jpeg_baseline,
    "jpeg2000": factories.jpeg2000,
    "rle": factories.rle,
    "rle-multiframe": factories.rle_multiframe,
    "jpeg-basic-offsets": lambda: factories.jpeg_multiframe(table="basic"),
    "jpeg-basic-offsets-two-fragments": lambda: factories.jpeg_multiframe(
        table="basic", fragments_per_frame=2
    ),
    "jpeg-extended-offsets": lambda: factories.jpeg_multiframe(table="extended"),
    "jpeg-no-table": lambda: factories.jpeg_multiframe(table="none"),
    "jpeg-no-table-three-fragments": lambda: factories.jpeg_multiframe(
        table="none", fragments_per_frame=3
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_frame_is_where_pydicom_finds_it(kind: str) -> None:
    ds = dcmread(io.BytesIO(factories.part10_bytes(KINDS[kind]())))
    layout, frames = layout_and_frames(ds)
    assert frames == stored_frames(ds)
    assert layout.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID


def test_single_bit_frames_do_not_start_on_byte_boundaries() -> None:
    ds = factories.single_bit_multiframe(frames=3, rows=5, columns=5)
    layout, frames = layout_and_frames(ds)
    assert [location.first_bit for location in layout.frames] == [0, 1, 2]  # 25 bits a frame
    assert [len(frame) for frame in frames] == [4, 4, 4]


def test_implicit_vr_file_has_the_same_native_frames() -> None:
    ds = factories.mr_multiframe(frames=3)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    _, frames = layout_and_frames(ds)
    assert frames == [frame.tobytes() for frame in ds.pixel_array]


def test_offset_table_that_misses_the_fragments_is_not_trusted() -> None:
    ds = factories.jpeg_multiframe(frames=3, table="none")
    frames = stored_frames(ds)
    wrong = struct.pack("<3I", 0, 10, 20)  # offsets inside the first fragment
    ds.PixelData = b"\xfe\xff\x00\xe0" + struct.pack("<I", 12) + wrong + ds.PixelData[8:]
    _, located = layout_and_frames(ds)
    assert located == frames


def test_fragments_that_cannot_be_told_apart_are_refused() -> None:
    ds = factories.rle_multiframe(frames=2)
    pieces = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate(pieces, fragments_per_frame=2, has_bot=False)  # RLE has no marker
    with pytest.raises(FramesUnavailable, match="fragments"):
        locate_frames(io.BytesIO(factories.part10_bytes(ds)))


def test_pixel_data_shorter_than_its_frames_is_refused() -> None:
    ds = factories.mr_multiframe(frames=2)
    ds.NumberOfFrames = 3
    with pytest.raises(FramesUnavailable, match="3 frame"):
        locate_frames(io.BytesIO(factories.part10_bytes(ds)))


@pytest.mark.parametrize("kind", ["ct", "mr-multiframe", "single-bit-multiframe"])
def test_deflated_frames_are_read_from_the_inflated_data_set(
    kind: str, blobs: FilesystemBlobStore, tmp_path: Path
) -> None:
    ds = KINDS[kind]()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    expected = stored_frames(dcmread(io.BytesIO(factories.part10_bytes(ds))))
    key = put(blobs, ds)
    for cache in (tmp_path / "cache", tmp_path / "cache"):  # computed, then from the sidecar
        layout = read_layout(blobs, key, cache, LayoutMemory(1000))
        with open_pixel_data(blobs, key, layout) as handle:
            backwards = [read_frame(handle, f) for f in reversed(layout.frames)]
        assert backwards[::-1] == expected


def test_number_of_frames_that_is_not_a_number_is_read_as_one_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pydicom_config.settings, "reading_validation_mode", pydicom_config.IGNORE)
    ds = factories.ct_slice()
    ds.NumberOfFrames = 1
    written = b"\x28\x00\x08\x00IS\x02\x001 "  # as a careless sender writes "1A"
    data = factories.part10_bytes(ds)
    assert data.count(written) == 1
    handle = io.BytesIO(data.replace(written, written[:-1] + b"A"))
    layout = locate_frames(handle)
    frames = [read_frame(handle, location) for location in layout.frames]
    assert len(frames) == 1 and frames[0] == ds.PixelData
    assert layout.pixel.notes == ("NumberOfFrames '1A' is not a number; read as 1",)


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated"])
def test_frames_are_not_guessed_without_rows_columns_or_bits_allocated(keyword: str) -> None:
    ds = factories.ct_slice()
    setattr(ds, keyword, None)
    with pytest.raises(FramesUnavailable, match=f"{keyword} is missing"):
        locate_frames(io.BytesIO(factories.part10_bytes(ds)))


def test_instance_without_pixel_data_has_no_frames() -> None:
    with pytest.raises(NoPixelData):
        locate_frames(io.BytesIO(factories.part10_bytes(factories.encapsulated_pdf())))


# -- the cache ----------------------------------------------------------------------------


@pytest.fixture
def blobs(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs", fsync=False)


def put(blobs: FilesystemBlobStore, ds: Dataset) -> str:
    spooled = blobs.spool_dir / "incoming.dcm"
    spooled.write_bytes(factories.part10_bytes(ds))
    key = blobs.new_key(ds.StudyInstanceUID, ds.SOPInstanceUID)
    blobs.store([(spooled, key)])
    return key


def test_layout_is_kept_in_a_sidecar_that_other_processes_read(
    blobs: FilesystemBlobStore, tmp_path: Path
) -> None:
    key = put(blobs, factories.jpeg_multiframe(table="none", fragments_per_frame=2))
    cache = tmp_path / "cache"
    first = read_layout(blobs, key, cache, LayoutMemory(1000))
    assert len(list(cache.rglob("*.json"))) == 1
    (blobs.root / key).rename(tmp_path / "moved.dcm")  # the file is no longer read
    assert read_layout(blobs, key, cache, LayoutMemory(1000)) == first


def test_unreadable_sidecar_is_recomputed(blobs: FilesystemBlobStore, tmp_path: Path) -> None:
    key = put(blobs, factories.mr_multiframe(frames=4))
    cache = tmp_path / "cache"
    first = read_layout(blobs, key, cache, LayoutMemory(1000))
    (sidecar,) = cache.rglob("*.json")
    sidecar.write_bytes(b'{"version": 1, "pixel"')
    assert read_layout(blobs, key, cache, LayoutMemory(1000)) == first


def test_memory_holds_a_bounded_number_of_frames(blobs: FilesystemBlobStore) -> None:
    memory = LayoutMemory(max_frames=12)
    keys = [put(blobs, factories.mr_multiframe(frames=5)) for _ in range(3)]
    for key in keys:
        read_layout(blobs, key, None, memory)
    assert memory.get(("None", keys[0])) is None  # 15 frames > 12: the oldest went
    assert memory.get(("None", keys[2])) is not None


# -- bulk data ----------------------------------------------------------------------------

BULK_PATHS = {
    "60003000": lambda ds: ds[0x60003000].value,  # overlay
    "00282000": lambda ds: ds.ICCProfile,
    "54000100/1/54001010": lambda ds: ds.WaveformSequence[1].WaveformData,
    "00091010": lambda ds: ds[0x00091010].value,  # private UN
    "00480105/0/00081140/0/00282000": lambda ds: (
        ds.OpticalPathSequence[0].ReferencedImageSequence[0].ICCProfile
    ),
    "7FE00010": lambda ds: ds.PixelData,
}


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_every_bulk_value_is_found_in_every_encoding(syntax: str) -> None:
    ds = factories.with_bulk_elements()
    ds.file_meta.TransferSyntaxUID = syntax
    data = factories.part10_bytes(ds)
    read = dcmread(io.BytesIO(data))
    handle = io.BytesIO(data)
    for path, expected in BULK_PATHS.items():
        value = locate_bulk_value(handle, parse_bulk_path(path), syntax)
        assert b"".join(iter_bulk_value(handle, value)) == expected(read), path
        if syntax != DeflatedExplicitVRLittleEndian:
            assert value.ranges and value.data is None  # streamed from the file, not loaded


def test_a_byte_range_of_a_value() -> None:
    ds = factories.with_bulk_elements()
    handle = io.BytesIO(factories.part10_bytes(ds))
    value = locate_bulk_value(handle, [0x00282000], ExplicitVRLittleEndian)
    assert b"".join(iter_bulk_value(handle, value, 100, 350)) == ds.ICCProfile[100:350]


def test_encapsulated_values_in_frames_keep_their_fragments() -> None:
    ds = factories.jpeg_baseline()
    handle = io.BytesIO(factories.part10_bytes(ds))
    value = locate_bulk_value(handle, [0x7FE00010], ds.file_meta.TransferSyntaxUID)
    assert b"".join(iter_bulk_value(handle, value)) == ds.PixelData  # items, no delimiter


@pytest.mark.parametrize(
    "path", ["00100011", "54000100/2/54001010", "54000100/0/54001010", "00100010/0/00100020"]
)
def test_missing_bulk_data_is_not_found(path: str) -> None:
    handle = io.BytesIO(factories.part10_bytes(factories.with_bulk_elements()))
    with pytest.raises(BulkDataNotFound):
        locate_bulk_value(handle, parse_bulk_path(path), ExplicitVRLittleEndian)


@pytest.mark.parametrize("path", ["", "7FE0001", "7FE00010/", "00480105/x/00282000", "../etc"])
def test_malformed_bulk_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidQuery):
        parse_bulk_path(path)


def test_layout_of_many_frames_reads_no_pixel_values() -> None:
    ds = factories.mr_multiframe(frames=500, rows=8, columns=8)
    data = factories.part10_bytes(ds)

    class CountingReader(io.BytesIO):
        read_bytes = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            self.read_bytes += len(chunk)
            return chunk

    handle = CountingReader(data)
    layout = locate_frames(handle)
    assert len(layout.frames) == 500
    assert handle.read_bytes < len(data) - len(ds.PixelData) + 64
    assert read_frame(handle, layout.frames[249]) == ds.pixel_array[249].tobytes()
    assert np.frombuffer(read_frame(handle, layout.frames[499]), "<u2").max() < 4096


def test_rle_multiframe_factory_is_rle() -> None:
    assert factories.rle_multiframe().file_meta.TransferSyntaxUID == RLELossless
