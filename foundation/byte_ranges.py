"""HTTP byte ranges of a single-part answer (RFC 9110 13.1.5, 14.1.2, 14.2, 14.4, 15.3.7, 15.5.17).

One range is served; a list of several is ignored (the whole value answers, as RFC 9110 14.2
allows) rather than answered as multipart/byteranges, which no client of ours asks for. A Range
sent with If-Range (13.1.5) is served only when If-Range is the value's strong ETag, compared
strongly (8.8.3.2); a date, a weak tag, another tag, or a value that has no ETag sends the whole
value. A Range in another unit is ignored; one in bytes that is not a byte range is
`InvalidRange`, which an edge answers 400 (DICOMweb) or 416 (the ZIP download).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from foundation.errors import InvalidQuery

__all__ = ["ByteRange", "InvalidRange", "RangeNotSatisfiable", "parse_range"]

_BYTES = re.compile(r"^\s*bytes\s*=\s*(.*)$", re.IGNORECASE)
_SPEC = re.compile(r"^(\d*)-(\d*)$")


class InvalidRange(InvalidQuery):
    """A Range in bytes that is not a byte range (bytes=first-last, first-, -suffix)."""


class RangeNotSatisfiable(Exception):
    """No byte of the value is in the range; answered 416 with the value's length."""

    def __init__(self, message: str, length: int) -> None:
        super().__init__(message)
        self.length = length


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive
    length: int  # of the whole value

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.length}"


def _holds_current(if_range: str | None, etag: str | None) -> bool:
    if if_range is None:
        return True
    if etag is None or etag.startswith("W/"):
        return False
    return if_range.strip() == etag


def parse_range(
    header: str | None, length: int, if_range: str | None = None, etag: str | None = None
) -> ByteRange | None:
    """The one range asked for, clipped to the value; None to send the whole value."""
    if header is None or not _holds_current(if_range, etag):
        return None
    match = _BYTES.match(header)
    if match is None:
        return None  # another range unit: ignored (RFC 9110 14.2)
    specs = [spec.strip() for spec in match[1].split(",") if spec.strip()]
    parsed = [_SPEC.match(spec) for spec in specs]
    if not specs or any(p is None or p[0] == "-" for p in parsed):
        raise InvalidRange(f"Range {header[:80]!r} is not a byte range (bytes=first-last)")
    if len(specs) > 1:
        return None
    first, last = parsed[0][1], parsed[0][2]  # type: ignore[index]
    if not first:  # a suffix: the last N bytes
        start, end = max(0, length - int(last)), length
        if int(last) == 0 or length == 0:
            raise RangeNotSatisfiable(f"Range {header!r}: an empty suffix", length)
    else:
        start = int(first)
        end = length if not last else min(int(last) + 1, length)
        if last and int(last) < start:
            raise InvalidRange(f"Range {header[:80]!r}: last byte before first")
        if start >= length:
            raise RangeNotSatisfiable(f"Range {header!r} starts past the {length} bytes", length)
    return ByteRange(start, end, length)
