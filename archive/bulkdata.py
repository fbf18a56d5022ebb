"""Bulk data values by the path a BulkDataURI names (PS3.18 10.4.1.1.5): `tag` or `seq/item/tag`.

The value is found by walking element headers in the stored file (PS3.5 7.1, 7.5): values on
the way are skipped, never read, so finding an ICC profile costs a few small reads whatever the
file's size, and the value itself is then streamed from the file. Undefined-length sequences and
items are walked to their delimiters; a UN element of undefined length holds an Implicit VR
Little Endian sequence (PS3.5 6.2.2). Deflated files have no byte positions to stream from: their
value is read whole, in memory, after pydicom inflates the dataset.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from archive.frames import LONG_LENGTH_VRS, UNDEFINED_LENGTH
from foundation.errors import InvalidQuery, NotFound

_PATH = re.compile(r"^(?:[0-9A-Fa-f]{8}/\d{1,6}/){0,8}[0-9A-Fa-f]{8}$")
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_PREAMBLE_AND_PREFIX = 132
_READ_SIZE = 1024 * 1024


class BulkDataNotFound(NotFound):
    pass


@dataclass(frozen=True)
class BulkValue:
    """A value as (file offset, byte count) pieces, or in memory when the file is deflated."""

    ranges: tuple[tuple[int, int], ...] = ()
    data: bytes | None = None

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else sum(n for _, n in self.ranges)


def parse_bulk_path(path: str) -> list[int]:
    """`00540016/0/00181072` -> [seq tag, item index, tag]; refused unless exactly that shape."""
    if not _PATH.match(path):
        raise InvalidQuery(f"bulk data path {path[:80]!r} is not tag or sequence/item/tag")
    return [int(part, 16) if len(part) == 8 else int(part) for part in path.split("/")]


@dataclass(frozen=True)
class _Header:
    tag: int
    vr: bytes | None
    length: int
    value_offset: int


class _Walker:
    """Element headers of one encoding, read at the handle's position."""

    def __init__(self, handle: BinaryIO, implicit: bool, big_endian: bool) -> None:
        self.handle = handle
        self.implicit = implicit
        self.order = ">" if big_endian else "<"

    def header(self) -> _Header | None:
        start = self.handle.tell()
        raw = self.handle.read(8)
        if len(raw) < 8:
            return None
        group, element = struct.unpack(self.order + "HH", raw[:4])
        tag = group << 16 | element
        if self.implicit or group == 0xFFFE:
            return _Header(tag, None, struct.unpack(self.order + "I", raw[4:])[0], start + 8)
        vr = raw[4:6]
        if vr in LONG_LENGTH_VRS:
            more = self.handle.read(4)
            if len(more) < 4:
                return None
            return _Header(tag, vr, struct.unpack(self.order + "I", more)[0], start + 12)
        return _Header(tag, vr, struct.unpack(self.order + "H", raw[6:])[0], start + 8)

    def nested(self, header: _Header) -> _Walker:
        """PS3.5 6.2.2: an undefined-length UN holds Implicit VR Little Endian items."""
        if header.vr == b"UN" and header.length == UNDEFINED_LENGTH:
            return _Walker(self.handle, implicit=True, big_endian=False)
        return self

    def find(self, tag: int, end: int | None) -> _Header | None:
        """The element in the dataset running to `end` (None: to its delimiter or the file end)."""
        while end is None or self.handle.tell() < end:
            header = self.header()
            if header is None or header.tag in (_ITEM_DELIMITATION, _SEQUENCE_DELIMITATION):
                return None
            if header.tag == tag:
                return header
            if header.tag > tag:  # PS3.5 7.1: elements ascend by tag
                return None
            self.skip(header)
        return None

    def skip(self, header: _Header) -> None:
        """Past the value; an undefined length is walked item by item to its delimiter."""
        if header.length != UNDEFINED_LENGTH:
            self.handle.seek(header.value_offset + header.length)
            return
        inner = self.nested(header)
        while (item := inner.header()) is not None and item.tag != _SEQUENCE_DELIMITATION:
            inner.skip_item(item)

    def skip_item(self, item: _Header) -> None:
        if item.length != UNDEFINED_LENGTH:
            self.handle.seek(item.value_offset + item.length)
            return
        while (element := self.header()) is not None and element.tag != _ITEM_DELIMITATION:
            self.skip(element)

    def item(self, sequence: _Header, index: int) -> tuple[_Walker, int | None]:
        """The walker and end of the dataset in item `index` of the sequence."""
        inner = self.nested(sequence)
        end = (
            None if sequence.length == UNDEFINED_LENGTH else sequence.value_offset + sequence.length
        )
        for number in range(index + 1):
            item = None if end is not None and self.handle.tell() >= end else inner.header()
            if item is None or item.tag != _ITEM:
                raise BulkDataNotFound(f"the sequence has no item {index}")
            if number < index:
                inner.skip_item(item)
        assert item is not None  # the loop ran at least once, and raised on None
        item_end = None if item.length == UNDEFINED_LENGTH else item.value_offset + item.length
        return inner, item_end


def locate_bulk_value(handle: BinaryIO, steps: list[int], transfer_syntax: str) -> BulkValue:
    """Where the value at the path is; BulkDataNotFound when there is no such element."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return BulkValue(data=_read_deflated_value(handle, steps))
    _skip_file_meta(handle)
    walker = _Walker(
        handle, transfer_syntax == ImplicitVRLittleEndian, transfer_syntax == ExplicitVRBigEndian
    )
    end: int | None = None
    for position in range(0, len(steps) - 1, 2):
        sequence = walker.find(steps[position], end)
        if sequence is None:
            raise BulkDataNotFound(f"no sequence ({steps[position]:08X}) at this path")
        walker, end = walker.item(sequence, steps[position + 1])
    element = walker.find(steps[-1], end)
    if element is None or element.vr == b"SQ":
        raise BulkDataNotFound(f"no bulk data ({steps[-1]:08X}) at this path")
    if element.length != UNDEFINED_LENGTH:
        return BulkValue(((element.value_offset, element.length),))
    walker.skip(element)  # encapsulated: the items as stored, without the sequence delimiter
    return BulkValue(((element.value_offset, handle.tell() - 8 - element.value_offset),))


def _skip_file_meta(handle: BinaryIO) -> None:
    """Past the preamble and the group 0002 elements, which are Explicit VR Little Endian."""
    handle.seek(0)
    start = _PREAMBLE_AND_PREFIX if handle.read(_PREAMBLE_AND_PREFIX)[128:] == b"DICM" else 0
    handle.seek(start)
    meta = _Walker(handle, implicit=False, big_endian=False)
    while True:
        position = handle.tell()
        peek = handle.read(2)
        handle.seek(position)
        if peek != b"\x02\x00":
            return
        header = meta.header()
        if header is None:
            return
        meta.skip(header)


def _read_deflated_value(handle: BinaryIO, steps: list[int]) -> bytes:
    handle.seek(0)
    dataset: Dataset = dcmread(handle, force=True)
    for position in range(0, len(steps) - 1, 2):
        sequence = dataset.get(steps[position])
        index = steps[position + 1]
        if sequence is None or sequence.VR != "SQ" or index >= len(sequence.value):
            raise BulkDataNotFound("no bulk data at this path")
        dataset = sequence.value[index]
    element = dataset.get(steps[-1])
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise BulkDataNotFound("no bulk data at this path")
    return bytes(element.value)


def value_spans(value: BulkValue, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Where the bytes from `start` up to `end` (exclusive, default the value's end) are in the
    file: (file offset, byte count) pieces, in order. Not for a value held in memory."""
    end = value.length if end is None else end
    spans = []
    base = 0
    for offset, count in value.ranges:
        low, high = max(start, base), min(end, base + count)
        if low < high:
            spans.append((offset + low - base, high - low))
        base += count
    return spans


def iter_bulk_value(
    handle: BinaryIO, value: BulkValue, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The bytes from `start` up to `end` (exclusive, default the value's end), in chunks."""
    if value.data is not None:
        yield value.data[start:end]
        return
    for offset, remaining in value_spans(value, start, end):
        handle.seek(offset)
        while remaining > 0:
            chunk = handle.read(min(remaining, _READ_SIZE))
            if not chunk:
                raise BulkDataNotFound("the stored file ends inside the value")
            remaining -= len(chunk)
            yield chunk
