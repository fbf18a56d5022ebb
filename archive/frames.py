"""Frames of a stored instance, found in its file without decoding (PS3.5 8.2; PS3.3 C.7.6.3).

Only the header up to the pixel data is parsed (`stop_before_pixels`), then the pixel data
element's own header. Native frames follow from the Image Pixel module: frame i starts at bit
i × Rows × Columns × Samples × Bits Allocated. Encapsulated frames are grouped from their
fragments by `archive.fragments`. Video transfer syntaxes hold one stream for all frames: it is
located as one unit, marked `video`. A deflated instance's frames are found in its inflated data
set and read through `archive._inflated` (see `open_pixel_data` in `archive.framecache`).
The Image Pixel module is read by `archive.pixel_module`, refusing bad required values.
Layouts are cached by `archive.framecache`.

Errors::

    NotFound
    └── NoPixelData          the instance has no pixel data (a document, a structured report)
    StoredDataUnreadable
    └── FramesUnavailable    pixel data whose frames cannot be located or read
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, cast

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from archive._inflated import InflatedFile
from archive.fragments import FragmentsNotSplit, group_fragments, read_fragments
from archive.pixel_module import BadValues, PixelModule, PixelModuleInvalid, read_pixel_module
from archive.structure import MalformedDataSet, data_set_start, walk_data_set
from archive.syntaxes import is_video
from foundation.errors import NotFound, StoredDataUnreadable

PIXEL_DATA_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
UNDEFINED_LENGTH = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VRs whose header has a 4-byte length
LONG_LENGTH_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_READ_SIZE = 1024 * 1024
_DEFER_BYTES = 4 * 1024 * 1024  # larger values before the pixel data are not read into memory


class NoPixelData(NotFound):
    pass


class FramesUnavailable(StoredDataUnreadable):
    pass


@dataclass(frozen=True)
class FrameLocation:
    """Where one frame's bytes are: (file offset, byte count) pieces, read in order.

    Native bit-packed frames (Bits Allocated 1) need not fill whole bytes: then `bit_count` says
    how many bits the frame has and `first_bit` where it starts in its first byte; such a frame
    is re-aligned to start a byte, its last byte padded with zero bits, as pydicom packs it.
    """

    ranges: tuple[tuple[int, int], ...]
    first_bit: int = 0
    bit_count: int = 0

    @property
    def length(self) -> int:
        if self.bit_count:
            return (self.bit_count + 7) // 8
        return sum(count for _, count in self.ranges)


@dataclass(frozen=True)
class PixelDataLayout:
    """An instance's pixel data element and its frames, as offsets into the stored file."""

    transfer_syntax_uid: str
    encapsulated: bool
    video: bool
    pixel: PixelModule
    value_offset: int  # first byte of the value (native) or of the Basic Offset Table item
    value_length: int  # bytes of the value, up to and including a sequence delimiter
    frames: tuple[FrameLocation, ...]
    inflated_from: int = 0  # deflated: offsets count inflated bytes from here (open_pixel_data)


def locate_frames(handle: BinaryIO) -> PixelDataLayout:
    """Parse up to the pixel data and find every frame; the handle is left anywhere."""
    handle.seek(0)
    try:
        dataset = dcmread(handle, stop_before_pixels=True, defer_size=_DEFER_BYTES, force=True)
    except Exception as error:  # pydicom raises many kinds on damaged files
        raise FramesUnavailable(f"the stored file cannot be parsed: {error}") from None
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian))
    if syntax == DeflatedExplicitVRLittleEndian:
        return _deflated(handle, dataset, syntax)
    big_endian = syntax == ExplicitVRBigEndian
    header = _read_pixel_header(handle, syntax == ImplicitVRLittleEndian, big_endian)
    if header is None:
        raise NoPixelData("the instance has no pixel data")
    tag, offset, length = header
    pixel = _describe(dataset, PIXEL_DATA_TAGS[tag])
    if length == UNDEFINED_LENGTH:
        return _encapsulated(handle, dataset, syntax, pixel, offset, big_endian)
    size = handle.seek(0, 2)
    if offset + length > size:  # found now, not once a response has started
        raise FramesUnavailable(
            f"the stored file ends inside its pixel data: {size - offset} of {length} bytes"
        )
    frames = native_frames(pixel, offset, length)
    return PixelDataLayout(syntax, False, False, pixel, offset, length, frames)


def _deflated(handle: BinaryIO, dataset: Dataset, syntax: str) -> PixelDataLayout:
    """Frames of a deflated instance, at their places in the inflated data set (`_inflated`)."""
    size = handle.seek(0, 2)
    try:
        start = data_set_start(handle, size)
        element = walk_data_set(handle, size, syntax)
    except MalformedDataSet as error:
        raise FramesUnavailable(f"the stored file cannot be read: {error.reason}") from None
    if element is None:
        raise NoPixelData("the instance has no pixel data")
    pixel = _describe(dataset, PIXEL_DATA_TAGS[element.tag])
    if element.encapsulated:
        view = cast(BinaryIO, InflatedFile(handle, start))
        layout = _encapsulated(view, dataset, syntax, pixel, element.offset, big_endian=False)
    else:
        frames = native_frames(pixel, element.offset, element.length)
        layout = PixelDataLayout(
            syntax, False, False, pixel, element.offset, element.length, frames
        )
    return replace(layout, inflated_from=start)


def _read_pixel_header(
    handle: BinaryIO, implicit: bool, big_endian: bool
) -> tuple[int, int, int] | None:
    """(tag, value offset, value length) of the pixel data element at the handle's position."""
    start = handle.tell()
    raw = handle.read(12)
    if len(raw) < 8:
        return None
    group, element = struct.unpack(">HH" if big_endian else "<HH", raw[:4])
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    order = ">" if big_endian else "<"
    if implicit or raw[4:6] not in LONG_LENGTH_VRS:
        return tag, start + 8, struct.unpack(order + "I", raw[4:8])[0]
    if len(raw) < 12:
        raise FramesUnavailable("the pixel data element is cut short")
    return tag, start + 12, struct.unpack(order + "I", raw[8:12])[0]


def _describe(dataset: Dataset, keyword: str) -> PixelModule:
    try:
        return read_pixel_module(dataset, keyword, bad_values=BadValues.REFUSE)
    except PixelModuleInvalid as error:
        raise FramesUnavailable(f"the frames cannot be found: {error}") from None


def native_frames(pixel: PixelModule, offset: int, length: int) -> tuple[FrameLocation, ...]:
    """Frame i starts at bit i × frame bits: byte-aligned unless Bits Allocated is 1."""
    bits = pixel.frame_bits
    needed = (bits * pixel.number_of_frames + 7) // 8
    if bits == 0 or length < needed:
        raise FramesUnavailable(
            f"pixel data holds {length} bytes; {pixel.number_of_frames} frame(s) need {needed}"
        )
    frames = []
    for index in range(pixel.number_of_frames):
        start, first_bit = divmod(index * bits, 8)
        if bits % 8:
            count = (first_bit + bits + 7) // 8
            frames.append(FrameLocation(((offset + start, count),), first_bit, bits))
        else:
            frames.append(FrameLocation(((offset + start, bits // 8),)))
    return tuple(frames)


def _encapsulated(
    handle: BinaryIO,
    dataset: Dataset,
    syntax: str,
    pixel: PixelModule,
    offset: int,
    big_endian: bool,
) -> PixelDataLayout:
    order = ">" if big_endian else "<"
    extended = (dataset.get("ExtendedOffsetTable"), dataset.get("ExtendedOffsetTableLengths"))
    video = is_video(syntax)
    try:
        found = read_fragments(handle, offset, order)
        frames = 1 if video else pixel.number_of_frames
        grouped = group_fragments(handle, found, frames, syntax, order, extended)
    except FragmentsNotSplit as error:
        raise FramesUnavailable(str(error)) from None
    located = tuple(FrameLocation(pieces) for pieces in grouped)
    return PixelDataLayout(syntax, True, video, pixel, offset, found.end - offset, located)


def iter_frame(handle: BinaryIO, location: FrameLocation) -> Iterator[bytes]:
    """A frame's bytes in chunks: the fragment values in order, or the native range."""
    if location.bit_count:
        yield read_frame(handle, location)
        return
    for offset, count in location.ranges:
        handle.seek(offset)
        while count > 0:
            chunk = handle.read(min(count, _READ_SIZE))
            if not chunk:
                raise FramesUnavailable("the stored file ends inside its pixel data")
            count -= len(chunk)
            yield chunk


def read_frame(handle: BinaryIO, location: FrameLocation) -> bytes:
    """One frame in memory (for decoding); bit-packed frames re-aligned to start a byte."""
    if not location.bit_count:
        return b"".join(iter_frame(handle, location))
    ((offset, count),) = location.ranges
    handle.seek(offset)
    packed = np.frombuffer(handle.read(count), dtype=np.uint8)
    bits = np.unpackbits(packed, bitorder="little")  # PS3.5 8.1.1: first pixel in the low bit
    frame = bits[location.first_bit : location.first_bit + location.bit_count]
    return np.packbits(frame, bitorder="little").tobytes()
