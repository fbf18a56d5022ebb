"""Encapsulated pixel data: its fragments, and which belong to which frame (PS3.5 A.4).

Only item headers are read (8 bytes each; values are skipped). Frame boundaries come from, in
this order:

1. the Extended Offset Table (7FE0,0001) and its Lengths (7FE0,0002) (PS3.3 C.7.6.3.1.8):
   one fragment per frame, the frame's length given without the fragment's padding;
2. the Basic Offset Table, when it has one offset per frame;
3. without a usable table (PS3.5 A.4 lets it be empty): one frame of all fragments when there
   is one frame, one fragment per frame when the counts agree, and otherwise a new frame at each
   fragment that opens with its codestream's start marker (JPEG and JPEG-LS SOI, JPEG 2000 and
   HTJ2K SOC, JPEG XL signature, from `archive.syntaxes`; PS3.5 A.4 puts each frame's stream
   in its own fragments).
   Anything else (RLE split across fragments, say) cannot be split and is refused.

A table whose offsets do not land on fragment starts is not trusted; the next rule is used.

Errors::

    ValueError
    └── FragmentsNotSplit
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import BinaryIO

from archive.syntaxes import start_markers

__all__ = [
    "Fragment",
    "Fragments",
    "FragmentsNotSplit",
    "Pieces",
    "group_fragments",
    "read_fragments",
]

UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITATION = (0xFFFE, 0xE0DD)

Pieces = tuple[tuple[int, int], ...]  # (file offset, byte count) of each part of a frame


class FragmentsNotSplit(ValueError):
    """The fragments cannot be read, or not told apart into frames."""


@dataclass(frozen=True)
class Fragment:
    item_offset: int  # of its item tag, counted from the first fragment's (as the tables count)
    value_offset: int  # in the file
    length: int


@dataclass(frozen=True)
class Fragments:
    basic_offsets: bytes  # the Basic Offset Table's value, often empty
    fragments: list[Fragment]
    end: int  # just past the sequence delimiter


def read_fragments(handle: BinaryIO, offset: int, order: str) -> Fragments:
    """Walk the items from the value's first byte (the Basic Offset Table item) to the end."""
    handle.seek(offset)
    basic: bytes | None = None
    fragments: list[Fragment] = []
    position = first = offset
    while True:
        raw = handle.read(8)
        if len(raw) < 8:
            raise FragmentsNotSplit("the encapsulated pixel data ends without its delimiter")
        group, element, length = struct.unpack(order + "HHI", raw)
        if (group, element) == _SEQUENCE_DELIMITATION:
            return Fragments(basic or b"", fragments, position + 8)
        if (group, element) != _ITEM or length == UNDEFINED_LENGTH:
            raise FragmentsNotSplit(f"({group:04X},{element:04X}) among the pixel data items")
        if basic is None:
            basic = handle.read(length)
            first = position + 8 + length
        else:
            fragments.append(Fragment(position - first, position + 8, length))
            handle.seek(length, 1)
        position += 8 + length


def group_fragments(
    handle: BinaryIO,
    found: Fragments,
    frames: int,
    syntax: str,
    order: str,
    extended: tuple[bytes | None, bytes | None] = (None, None),
) -> list[Pieces]:
    """Each frame's pieces, by the first rule of the module's list that applies."""
    if not found.fragments:
        raise FragmentsNotSplit("the encapsulated pixel data has no fragments")
    return (
        _by_extended_table(
            found.fragments,
            frames,
            _unpack(order, "Q", extended[0]),
            _unpack(order, "Q", extended[1]),
        )
        or _by_offsets(found.fragments, frames, _unpack(order, "I", found.basic_offsets))
        or _without_table(handle, found.fragments, frames, syntax)
    )


def _unpack(order: str, code: str, value: bytes | None) -> list[int]:
    size = struct.calcsize(code)
    count = len(value or b"") // size
    return list(struct.unpack(f"{order}{count}{code}", (value or b"")[: count * size]))


def _by_offsets(fragments: list[Fragment], frames: int, offsets: list[int]) -> list[Pieces] | None:
    """Group at the table's offsets, which must be increasing fragment starts from the first."""
    if len(offsets) != frames:
        return None
    starts = {fragment.item_offset: index for index, fragment in enumerate(fragments)}
    firsts = [starts.get(offset, -1) for offset in offsets]
    if firsts[0] != 0 or any(a >= b for a, b in itertools.pairwise(firsts)):
        return None
    bounds = [*firsts, len(fragments)]
    return [
        tuple((f.value_offset, f.length) for f in fragments[bounds[i] : bounds[i + 1]])
        for i in range(frames)
    ]


def _by_extended_table(
    fragments: list[Fragment], frames: int, offsets: list[int], lengths: list[int]
) -> list[Pieces] | None:
    grouped = _by_offsets(fragments, frames, offsets) if len(lengths) == len(offsets) else None
    if grouped is None or any(len(pieces) != 1 for pieces in grouped):
        return None
    if any(length > pieces[0][1] for pieces, length in zip(grouped, lengths, strict=True)):
        return None
    return [((pieces[0][0], length),) for pieces, length in zip(grouped, lengths, strict=True)]


def _without_table(
    handle: BinaryIO, fragments: list[Fragment], frames: int, syntax: str
) -> list[Pieces]:
    pieces = [(f.value_offset, f.length) for f in fragments]
    if frames == 1:
        return [tuple(pieces)]
    if len(pieces) == frames:
        return [(piece,) for piece in pieces]
    markers = start_markers(syntax)
    if len(pieces) > frames and markers:
        grouped: list[list[tuple[int, int]]] = []
        for piece in pieces:
            handle.seek(piece[0])
            opening = handle.read(8)
            if not grouped or opening.startswith(markers):
                grouped.append([])
            grouped[-1].append(piece)
        if len(grouped) == frames:
            return [tuple(group) for group in grouped]
    raise FragmentsNotSplit(
        f"cannot tell which of {len(pieces)} fragments belong to which of {frames} frames"
    )
