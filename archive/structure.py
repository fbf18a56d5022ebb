"""The structure of a received data set, walked to its last byte (PS3.5 7.1, 7.5, A.4, PS3.10 7).

Only element headers are read: tag, VR and length, then the value is skipped (a seek). Sequences
are walked item by item, at any depth, whether their lengths are defined or undefined; a UN
value of undefined length is a sequence in Implicit VR Little Endian (PS3.5 6.2.2); encapsulated
pixel data is walked fragment by fragment to its sequence delimiter, and whatever follows it
(Data Set Trailing Padding, say) is parsed like any other element. A deflated data set is
inflated as it is walked, never held whole in memory.

As pydicom does, an explicit VR element whose VR is not two capital letters is read as
implicit, so files that switch encoding inside sequences walk as they parse.

Errors::

    ValueError
    └── MalformedDataSet       the data set's structure is broken; `reason` says where
        └── DataSetTruncated   the data set ends inside an element (or its header)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

__all__ = [
    "DataSetTruncated",
    "MalformedDataSet",
    "PixelElement",
    "data_set_start",
    "walk_data_set",
]

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
# PS3.5 7.1.2: explicit VRs whose header has two reserved bytes and a 4-byte length
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_MAX_DEPTH = 64  # nesting a real data set never reaches; deeper is hostile
_CHUNK = 256 * 1024


class MalformedDataSet(ValueError):
    """The data set's structure is broken; `reason` is what the refusal says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DataSetTruncated(MalformedDataSet):
    """The data set stops inside an element; `position` is the byte where it stops."""

    def __init__(self, position: int, detail: str) -> None:
        super().__init__(f"data set truncated at byte {position} ({detail})")
        self.position = position


@dataclass(frozen=True)
class PixelElement:
    """The top-level pixel data element: which one, its explicit VR (if any) and its length."""

    tag: int
    vr: str | None
    length: int  # UNDEFINED_LENGTH when encapsulated
    offset: int  # of the value's first byte; in a deflated file, counted as if inflated

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    order: str  # "<" or ">"


class _Source:
    """Bytes of the file from a position, with reads, skips and a known end."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.label = ""

    @property
    def position(self) -> int:
        return self.handle.tell()

    def read(self, count: int) -> bytes:
        return self.handle.read(count)

    def skip(self, count: int) -> int:
        """Skip up to `count` bytes; how many there were."""
        start = self.handle.tell()
        skipped = min(count, max(self.size - start, 0))
        self.handle.seek(start + skipped)
        return skipped

    def at_end(self) -> bool:
        return self.handle.tell() >= self.size

    def unread(self, count: int) -> None:
        self.handle.seek(-count, 1)


class _InflatedSource(_Source):
    """A deflated data set (PS3.5 A.5), inflated as it is read; positions count inflated bytes."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        super().__init__(handle, size)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = b""
        self._offset = 0  # into the buffer
        self._position = handle.tell()
        self.label = " of the inflated data set"

    @property
    def position(self) -> int:
        return self._position

    def _fill(self, count: int) -> None:
        while len(self._buffer) - self._offset < count:
            raw = self.handle.read(_CHUNK)
            try:
                more = self._inflater.decompress(raw) if raw else self._inflater.flush()
            except zlib.error as error:
                raise MalformedDataSet(
                    f"the deflated data set cannot be inflated: {error}"
                ) from None
            if not raw and not more:
                return
            self._buffer = self._buffer[self._offset :] + more
            self._offset = 0

    def read(self, count: int) -> bytes:
        self._fill(count)
        data = self._buffer[self._offset : self._offset + count]
        self._offset += len(data)
        self._position += len(data)
        return data

    def skip(self, count: int) -> int:
        skipped = 0
        while skipped < count:
            chunk = self.read(min(count - skipped, _CHUNK))
            if not chunk:
                break
            skipped += len(chunk)
        return skipped

    def at_end(self) -> bool:
        self._fill(1)
        return self._offset >= len(self._buffer)

    def unread(self, count: int) -> None:
        self._offset -= count
        self._position -= count


def walk_data_set(
    handle: BinaryIO, size: int, transfer_syntax_uid: str | None
) -> PixelElement | None:
    """Walk a Part 10 file or a bare data set to its end; its top-level pixel data element.

    `transfer_syntax_uid` is the File Meta's, or None for a bare data set (its encoding is
    then told from its first element, as pydicom does). Raises MalformedDataSet.
    """
    source = _Source(handle, size)
    handle.seek(data_set_start(handle, size))
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        source = _InflatedSource(handle, size)
    encoding = _encoding(source, transfer_syntax_uid)
    return _Walker(source).elements(encoding, end=None, depth=0)


def data_set_start(handle: BinaryIO, size: int) -> int:
    """Where the data set begins: after the preamble, prefix and File Meta, when there are."""
    handle.seek(0)
    head = handle.read(132)
    handle.seek(132 if head[128:132] == b"DICM" else 0)
    _walk_meta(_Source(handle, size))
    return handle.tell()


def _walk_meta(source: _Source) -> None:
    """The File Meta group (0002) is Explicit VR Little Endian, whatever follows it."""
    walker = _Walker(source)
    while True:
        header = source.read(8)
        if len(header) < 8 or struct.unpack("<H", header[:2])[0] != 0x0002:
            source.unread(len(header))
            return
        source.unread(8)
        walker.element(_Encoding(False, "<"), end=None, depth=0)


def _encoding(source: _Source, syntax: str | None) -> _Encoding:
    """As pydicom reads it: the first element's VR bytes decide implicit or explicit, and a
    bare data set whose first group reads 1024 or more little endian is big endian."""
    first = source.read(6)
    source.unread(len(first))
    explicit = len(first) == 6 and all(0x40 < byte < 0x5B for byte in first[4:6])
    if syntax is None:
        big = explicit and struct.unpack("<H", first[:2])[0] >= 1024
        return _Encoding(not explicit, ">" if big else "<")
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    if len(first) < 6:
        return _Encoding(syntax == ImplicitVRLittleEndian, order)
    return _Encoding(not explicit, order)


class _Walker:
    def __init__(self, source: _Source) -> None:
        self.source = source
        self.pixel: PixelElement | None = None

    def truncated(self, detail: str) -> DataSetTruncated:
        return DataSetTruncated(self.source.position, f"{detail}{self.source.label}")

    def elements(self, encoding: _Encoding, end: int | None, depth: int) -> PixelElement | None:
        """Elements up to `end`, or to the end of the data (top level), or to an item delimiter."""
        if depth > _MAX_DEPTH:
            raise MalformedDataSet(f"sequences nested deeper than {_MAX_DEPTH} levels")
        source = self.source
        while True:
            if end is not None and source.position >= end:
                if source.position > end:
                    raise MalformedDataSet(
                        f"an element runs past the end of its item at byte {end}"
                    )
                return self.pixel
            if end is None and depth == 0 and source.at_end():
                return self.pixel
            if self.element(encoding, end, depth) == _ITEM_DELIMITATION:
                if end is not None or depth == 0:
                    raise MalformedDataSet(
                        f"item delimiter at byte {source.position - 8} outside an item"
                    )
                return self.pixel

    def element(self, encoding: _Encoding, end: int | None, depth: int) -> int:
        """One element, nested sequences included; its tag."""
        source = self.source
        start = source.position
        header = source.read(8)
        if len(header) < 8:
            raise self.truncated(f"inside an element header at byte {start}")
        group, number = struct.unpack(encoding.order + "HH", header[:4])
        tag: int = group << 16 | number
        name = _named(tag)
        vr: bytes | None = None
        if group == 0xFFFE or encoding.implicit or not b"AA" <= header[4:6] <= b"ZZ":
            length = struct.unpack(encoding.order + "I", header[4:8])[0]
        elif header[4:6] in _LONG_VRS:
            vr = header[4:6]
            extra = source.read(4)
            if len(extra) < 4:
                raise self.truncated(f"inside the header of {name} at byte {start}")
            length = struct.unpack(encoding.order + "I", extra)[0]
        else:
            vr = header[4:6]
            length = struct.unpack(encoding.order + "H", header[6:8])[0]
        if tag == _ITEM_DELIMITATION:
            return tag
        if group == 0xFFFE:
            raise MalformedDataSet(f"{name} at byte {start} where a data element belongs")
        if depth == 0 and tag in PIXEL_DATA_TAGS and self.pixel is None:
            self.pixel = PixelElement(tag, vr.decode() if vr else None, length, source.position)
        if length == UNDEFINED_LENGTH:
            self._undefined_length(tag, name, vr, encoding, depth)
        elif vr == b"SQ" or (vr is None and _dictionary_vr(tag) == "SQ"):
            value_end = source.position + length
            if end is not None and value_end > end:
                raise MalformedDataSet(f"{name} at byte {start} runs past the end of its item")
            self.items(encoding, value_end, depth + 1, name)
        else:
            if end is not None and source.position + length > end:
                raise MalformedDataSet(f"{name} at byte {start} runs past the end of its item")
            if source.skip(length) < length:
                raise self.truncated(f"{name} of {length} bytes from byte {start}")
        return tag

    def _undefined_length(
        self, tag: int, name: str, vr: bytes | None, encoding: _Encoding, depth: int
    ) -> None:
        if tag in PIXEL_DATA_TAGS and vr in (None, b"OB", b"OW"):
            self.fragments(encoding, name)
        elif vr == b"UN":  # PS3.5 6.2.2: its items are Implicit VR Little Endian
            self.items(_Encoding(True, "<"), None, depth + 1, name)
        elif vr in (None, b"SQ"):
            self.items(encoding, None, depth + 1, name)
        else:
            raise MalformedDataSet(
                f"{name} has VR {vr.decode(errors='replace')} and undefined length"
            )

    def items(self, encoding: _Encoding, end: int | None, depth: int, name: str) -> None:
        """A sequence's items, to `end` or to its sequence delimiter."""
        source = self.source
        while end is None or source.position < end:
            start = source.position
            header = source.read(8)
            if len(header) < 8:
                raise self.truncated(f"inside sequence {name}, at byte {start}")
            group, number, length = struct.unpack(encoding.order + "HHI", header)
            tag = group << 16 | number
            if tag == _SEQUENCE_DELIMITATION and end is None:
                return
            if tag != _ITEM:
                raise MalformedDataSet(f"({group:04X},{number:04X}) at byte {start} in {name}")
            if length == UNDEFINED_LENGTH:
                self.elements(encoding, None, depth)
                continue
            if end is not None and source.position + length > end:
                raise MalformedDataSet(f"an item of {name} at byte {start} runs past its end")
            self.elements(encoding, source.position + length, depth)
        if end is not None and source.position > end:
            raise MalformedDataSet(f"{name} runs past its end at byte {end}")

    def fragments(self, encoding: _Encoding, name: str) -> None:
        """Encapsulated pixel data: items of defined length up to the sequence delimiter."""
        source = self.source
        while True:
            start = source.position
            header = source.read(8)
            if len(header) < 8:
                raise self.truncated(f"inside the encapsulated {name}, at byte {start}")
            group, number, length = struct.unpack(encoding.order + "HHI", header)
            tag = group << 16 | number
            if tag == _SEQUENCE_DELIMITATION:
                return
            if tag != _ITEM or length == UNDEFINED_LENGTH:
                raise MalformedDataSet(
                    f"({group:04X},{number:04X}) at byte {start} among the fragments of {name}"
                )
            if source.skip(length) < length:
                raise self.truncated(f"inside a fragment of {length} bytes from byte {start}")


def _named(tag: int) -> str:
    """`(7FE0,0010) PixelData`: the tag as the standard writes it, and its keyword if public."""
    keyword = keyword_for_tag(tag) if tag >> 16 & 1 == 0 else ""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}){' ' + keyword if keyword else ''}"


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""
