"""A ZIP of stored members whose sizes are known before the first byte (APPNOTE 6.3.10).

Every member is stored (method 0) and followed by a data descriptor (general purpose bit 3), so
its CRC-32 is worked out while its bytes stream and written after them. Names, sizes and the
time stamp fix where every header, every byte of data and the central directory lie, so the
archive's length and any byte range of it are known before a blob is opened: a range is
answered by skipping the members wholly before it and starting inside the one it begins in.
The central directory needs every member's CRC; one neither known beforehand (the index keeps
each blob's, `exchange.downloads`) nor streamed is read for it. With every CRC a range needs
known, its members' data need not pass through the process at all: `iter_zip_pieces` gives
their spans, for the caller to send from the files (`os.sendfile`).

ZIP64 structures (APPNOTE 4.3.14, 4.3.15, 4.5.3) are written where a size, an offset or the
number of members passes what the classic fields hold, as `zipfile` does.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

ZIP64_LIMIT = (1 << 31) - 1  # as zipfile: past it, sizes and offsets go in a ZIP64 field
COUNT_LIMIT = 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header (4.3.7)
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory file header (4.3.12)
_DESCRIPTOR = struct.Struct("<IIII")  # data descriptor with its signature (4.3.9)
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_END = struct.Struct("<IHHHHIIH")  # end of central directory record (4.3.16)
_END64 = struct.Struct("<IQHHIIQQQQ")  # ZIP64 end of central directory record (4.3.14)
_LOCATOR64 = struct.Struct("<IIQI")  # ZIP64 end of central directory locator (4.3.15)
_VERSION, _VERSION64 = 20, 45  # 2.0: stored with descriptors; 4.5: ZIP64
_UNIX = 3 << 8  # "version made by": attributes are Unix modes
_FILE_MODE = 0o100644 << 16
_DESCRIPTOR_FLAG, _UTF8_FLAG = 0x08, 0x800


class MemberChanged(Exception):
    """A member's bytes are no longer those its place was computed from."""


def dos_time(stamp: tuple[int, ...]) -> tuple[int, int]:
    """MS-DOS date and time (4.4.6): two-second steps, years from 1980."""
    year, month, day, hour, minute, second = stamp[:6]
    return (max(year, 1980) - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


@dataclass(frozen=True)
class Member:
    """A member's name and size, and where its local header starts."""

    name: bytes
    size: int
    offset: int
    zip64: bool

    @property
    def flags(self) -> int:
        return _DESCRIPTOR_FLAG | (_UTF8_FLAG if not self.name.isascii() else 0)

    @property
    def data_start(self) -> int:
        return self.offset + _LOCAL.size + len(self.name) + (20 if self.zip64 else 0)

    @property
    def data_end(self) -> int:
        return self.data_start + self.size

    @property
    def end(self) -> int:
        return self.data_end + (_DESCRIPTOR64 if self.zip64 else _DESCRIPTOR).size


class ZipLayout:
    """Where every part of the archive lies; the bytes of every part but the members' data."""

    def __init__(
        self,
        entries: Sequence[tuple[str, int]],
        stamp: tuple[int, ...],
        *,
        zip64_limit: int = ZIP64_LIMIT,
        count_limit: int = COUNT_LIMIT,
    ) -> None:
        self.date, self.time = dos_time(stamp)
        self.zip64_limit, self.count_limit = zip64_limit, count_limit
        members, offset = [], 0
        for name, size in entries:
            member = Member(name.encode("utf-8"), size, offset, size > zip64_limit)
            members.append(member)
            offset = member.end
        self.members: tuple[Member, ...] = tuple(members)
        self.central_offset = offset
        self.central_length = sum(self._central_length(m) for m in self.members)
        self.length = self.central_offset + self.central_length + len(self._end(0, 0))

    def local_header(self, member: Member) -> bytes:
        version = _VERSION64 if member.zip64 else _VERSION
        sizes = 0xFFFFFFFF if member.zip64 else 0  # with a descriptor, the sizes come after
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if member.zip64 else b""
        head = _LOCAL.pack(0x04034B50, version, member.flags, 0, self.time, self.date, 0,
                           sizes, sizes, len(member.name), len(extra))  # fmt: skip
        return head + member.name + extra

    @staticmethod
    def descriptor(member: Member, crc: int) -> bytes:
        shape = _DESCRIPTOR64 if member.zip64 else _DESCRIPTOR
        return shape.pack(0x08074B50, crc, member.size, member.size)

    def _central_extra(self, member: Member) -> list[int]:
        values = [member.size, member.size] if member.size > self.zip64_limit else []
        return values + ([member.offset] if member.offset > self.zip64_limit else [])

    def _central_length(self, member: Member) -> int:
        extra = self._central_extra(member)
        return _CENTRAL.size + len(member.name) + (4 + 8 * len(extra) if extra else 0)

    def central_header(self, member: Member, crc: int) -> bytes:
        extra = self._central_extra(member)
        field = struct.pack(f"<HH{len(extra)}Q", 1, 8 * len(extra), *extra) if extra else b""
        big = member.size > self.zip64_limit
        size = 0xFFFFFFFF if big else member.size
        offset = 0xFFFFFFFF if member.offset > self.zip64_limit else member.offset
        version = _VERSION64 if extra else _VERSION
        head = _CENTRAL.pack(0x02014B50, version | _UNIX, version, member.flags, 0, self.time,
                             self.date, crc, size, size, len(member.name), len(field), 0, 0, 0,
                             _FILE_MODE, offset)  # fmt: skip
        return head + member.name + field

    def _end(self, central_offset: int, central_length: int) -> bytes:
        """The ZIP64 end records when needed, then the end of central directory record."""
        count = len(self.members)
        limit = self.zip64_limit
        big = count > self.count_limit or self.central_offset > limit or self.central_length > limit
        short = min(count, 0xFFFF)
        length, offset = min(central_length, 0xFFFFFFFF), min(central_offset, 0xFFFFFFFF)
        end = _END.pack(0x06054B50, 0, 0, short, short, length, offset, 0)
        if not big:
            return end
        record = _END64.pack(0x06064B50, _END64.size - 12, _VERSION64, _VERSION64, 0, 0, count,
                             count, central_length, central_offset)  # fmt: skip
        locator = _LOCATOR64.pack(0x07064B50, 0, central_offset + central_length, 1)
        return record + locator + end

    def central_directory(self, crcs: Sequence[int]) -> bytes:
        """Everything after the last member: the central directory and the end records."""
        headers = [self.central_header(m, crc) for m, crc in zip(self.members, crcs, strict=True)]
        return b"".join([*headers, self._end(self.central_offset, self.central_length)])


ReadMember = Callable[[int], Iterator[bytes]]  # a member's bytes, by its index, in chunks


@dataclass(frozen=True)
class DataSpan:
    """Bytes `start` to `end` of member `index`'s data, as stored: the caller sends them."""

    index: int
    start: int
    end: int


def iter_zip_pieces(
    layout: ZipLayout, crc_of: Callable[[int], int], start: int, end: int
) -> Iterator[bytes | DataSpan]:
    """The archive's bytes from `start` to `end` (exclusive): headers, descriptors and the
    central directory as bytes, each member's data as the span of it to send. `crc_of` is
    asked for a member's CRC only after its span has been taken (a reader works it out then)."""

    def clip(data: bytes, at: int) -> bytes:
        return data[max(start - at, 0) : max(end - at, 0)]

    for index, member in enumerate(layout.members):
        if member.end <= start:
            continue
        if member.offset >= end:
            return
        if member.data_start > start:
            yield clip(layout.local_header(member), member.offset)
        if member.data_start < end and member.data_end > start:
            base = member.data_start
            yield DataSpan(index, max(start - base, 0), min(end - base, member.size))
        if member.data_end < end:
            yield clip(layout.descriptor(member, crc_of(index)), member.data_end)
    if layout.central_offset < end:
        directory = layout.central_directory([crc_of(i) for i in range(len(layout.members))])
        yield clip(directory, layout.central_offset)


def crcs_needed(layout: ZipLayout, start: int, end: int) -> list[int]:
    """The members whose CRC-32 the bytes from `start` to `end` hold (descriptors, directory)."""
    if layout.central_offset < end:
        return list(range(len(layout.members)))
    return [i for i, m in enumerate(layout.members) if m.data_end < end and m.end > start]


class _Crcs:
    """Each member's CRC-32: given, kept when its data streamed whole, else read for it."""

    def __init__(
        self,
        layout: ZipLayout,
        read: ReadMember,
        known: list[int | None],
        learnt: Callable[[int], None] | None,
    ) -> None:
        self.known, self.learnt = known, learnt
        self.layout, self.read = layout, read

    def of(self, index: int) -> int:
        known = self.known[index]
        if known is None:
            size = self.layout.members[index].size
            for _ in self.iter_data(index, size, size):  # read for its CRC, nothing sent
                pass
            known = self.known[index]
        assert known is not None
        return known

    def iter_data(self, index: int, start: int, end: int) -> Iterator[bytes]:
        """The member's data from `start` to `end` (offsets in its data). Unless its CRC is
        known it is read from its first byte, for the CRC; a size other than the planned one
        raises MemberChanged."""
        member, crc, position = self.layout.members[index], 0, 0
        counting = self.known[index] is None
        for chunk in self.read(index):
            following = position + len(chunk)
            if following > member.size:
                break
            if counting:
                crc = zlib.crc32(chunk, crc)
            if start < following and position < end:
                yield chunk[max(start - position, 0) : end - position]
            position = following
            if end <= position < member.size:
                return  # the rest is not asked for, nor is the descriptor after it
        else:
            if position == member.size:
                if counting:
                    self.known[index] = crc
                    if self.learnt is not None:
                        self.learnt(index)
                return
        raise MemberChanged(f"{member.name.decode()} is no longer the {member.size} bytes planned")


def iter_zip_range(
    layout: ZipLayout,
    read: ReadMember,
    start: int,
    end: int,
    known: list[int | None] | None = None,
    learnt: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The archive's bytes from `start` to `end` (exclusive), part by part. `known` holds the
    members' CRCs where known (None elsewhere); those worked out meanwhile are filled in, and
    `learnt` told each one's index."""
    known = [None] * len(layout.members) if known is None else known
    crcs = _Crcs(layout, read, known, learnt)
    for piece in iter_zip_pieces(layout, crcs.of, start, end):
        if isinstance(piece, DataSpan):
            yield from crcs.iter_data(piece.index, piece.start, piece.end)
        else:
            yield piece
