"""multipart/related streams (RFC 2387, RFC 2046 §5.1) for WADO-RS and STOW-RS (PS3.18 10.4, 10.5).

Reading is delegated to python-multipart's callback parser, which scans for delimiters without
buffering part bodies. It insists that a body starts with its first delimiter, while RFC 2046
§5.1.1 lets a preamble come first; so the reader feeds it a delimiter of its own before the body
and treats everything up to the body's first delimiter as a part it throws away. Part headers
must be ``token: value`` lines: python-multipart rejects folded (multi-line) headers and field
names outside RFC 9110's token characters, both legal in MIME but sent by no DICOMweb client we
know of; such a body is reported as malformed.

Errors::

    ValueError
    └── MalformedMultipart
"""

from __future__ import annotations

import os
import string
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from foundation.writeback import WriteBehind

__all__ = [
    "MalformedMultipart",
    "ReceivedPart",
    "RelatedPartsReader",
    "iter_multipart_related",
    "multipart_closing",
    "multipart_length",
    "multipart_part_header",
    "new_boundary",
    "part_prefixes",
]

MAX_BOUNDARY_LENGTH = 70  # RFC 2046 §5.1.1
# A DICOMweb part carries a handful of Content-* headers; these bound what one part can make us
# hold in memory (python-multipart's own default of 8 headers is tight for MIME parts).
MAX_PART_HEADERS = 32
MAX_HEADER_LINE = 8192
_BCHARS = frozenset(string.ascii_letters + string.digits + "'()+_,-./:=? ")  # RFC 2046 §5.1.1
_TCHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")  # RFC 9110 §5.6.2


class MalformedMultipart(ValueError):
    """A body that is not multipart/related framing around the announced boundary."""


@dataclass(frozen=True)
class ReceivedPart:
    """One body part, spooled to ``path``; the caller renames or deletes the file.

    ``size`` counts the body bytes received. A ``too_large`` part's file is left empty, so the
    count still says how far over the limit it went. An incomplete part (the body ended before its
    delimiter) holds what arrived, less any trailing bytes that could have begun a delimiter.
    """

    path: Path
    headers: Mapping[str, str]
    content_type: str | None
    size: int
    complete: bool
    too_large: bool


class _SpooledPart:
    """The part being received: its headers so far and the open temporary file of its body.

    The body is written unbuffered, and the disk starts writing it as it arrives
    (`foundation.writeback`): the flush that makes the stored instances durable later has
    little left to wait for.
    """

    def __init__(self, spool_dir: Path, max_bytes: int | None) -> None:
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix=".part-")
        self.path = Path(name)
        self.writer = WriteBehind(fd)
        self.max_bytes = max_bytes
        self.headers: dict[str, str] = {}
        self.size = 0
        self.too_large = False

    def add_header(self, name: str, value: str) -> None:
        # Repeats are joined as HTTP joins them (RFC 9110 §5.3); a joined Content-Type then
        # fails to parse rather than one of the two silently winning.
        previous = self.headers.get(name)
        self.headers[name] = value if previous is None else f"{previous}, {value}"

    def write(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        if self.too_large:
            return
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.too_large = True
            # The part will be refused; its bytes are no use on disk.
            os.ftruncate(self.writer.fd, 0)
            return
        self.writer.write(memoryview(data)[start:end])

    def finish(self, complete: bool) -> ReceivedPart:
        if not self.too_large:
            self.writer.finish()
        self.writer.close()
        headers = MappingProxyType(self.headers)
        return ReceivedPart(
            self.path, headers, headers.get("content-type"), self.size, complete, self.too_large
        )

    def delete(self) -> None:
        self.writer.close()
        self.path.unlink(missing_ok=True)


class RelatedPartsReader:
    """Incremental multipart/related reader that spools each part to a file in ``spool_dir``.

    Synchronous by design: an async edge calls it from a worker thread, chunk by chunk. Use it as
    a context manager so that a body abandoned midway (a client gone, a parse error) leaves no
    temporary files behind; parts already returned belong to the caller.
    """

    def __init__(self, boundary: bytes, spool_dir: Path, max_part_bytes: int | None = None) -> None:
        if not 0 < len(boundary) <= MAX_BOUNDARY_LENGTH or b"\r" in boundary or b"\n" in boundary:
            raise MalformedMultipart(f"unusable multipart boundary {boundary!r}")
        self.truncated = False
        self._spool_dir = spool_dir
        self._max_part_bytes = max_part_bytes
        self._current: _SpooledPart | None = None
        self._ready: list[ReceivedPart] = []
        self._field = bytearray()
        self._value = bytearray()
        self._found_delimiter = False
        self._ended = False
        self._closed = False
        self._received = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_end": self._on_end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_HEADER_LINE,
        )
        # The stand-in part that swallows the preamble; the CRLF lets the body open directly
        # with its first delimiter, since a delimiter is CRLF "--" boundary (RFC 2046 §5.1.1).
        self._parser.write(b"--" + boundary + b"\r\n\r\n\r\n")

    def feed(self, chunk: bytes) -> list[ReceivedPart]:
        """Parse the next piece of the body; returns the parts it completed."""
        self._require_open()
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.discard()
            raise MalformedMultipart(
                f"malformed multipart/related body near byte {self._received + exc.offset}: {exc}"
            ) from exc
        except BaseException:
            self.discard()
            raise
        self._received += len(chunk)
        return self._hand_out()

    def close(self) -> list[ReceivedPart]:
        """Finish the body; a part cut off before its delimiter comes back incomplete."""
        self._require_open()
        if not self._found_delimiter:
            self.discard()
            raise MalformedMultipart("no multipart boundary found in the body")
        self._closed = True
        if not self._ended:
            self.truncated = True
            if self._current is not None:
                self._ready.append(self._current.finish(complete=False))
                self._current = None
        return self._hand_out()

    def discard(self) -> None:
        """Delete the files of parts not handed out, and stop reading."""
        self._closed = True
        if self._current is not None:
            self._current.delete()
            self._current = None
        for part in self._ready:
            part.path.unlink(missing_ok=True)
        self._ready.clear()

    def __enter__(self) -> RelatedPartsReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("this multipart/related reader is closed")

    def _hand_out(self) -> list[ReceivedPart]:
        parts, self._ready = self._ready, []
        return parts

    def _on_part_begin(self) -> None:
        if self._found_delimiter:
            self._current = _SpooledPart(self._spool_dir, self._max_part_bytes)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.write(data, start, end)

    def _on_part_end(self) -> None:
        if self._current is None:  # the end of the preamble
            self._found_delimiter = True
            return
        self._ready.append(self._current.finish(complete=True))
        self._current = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._current is not None:
            name = self._field.decode("ascii").lower()
            self._current.add_header(name, self._value.decode("latin-1").strip(" \t"))
        self._field.clear()
        self._value.clear()

    def _on_end(self) -> None:
        self._ended = True


def new_boundary() -> str:
    """A fresh boundary; random hex cannot occur by chance in the parts it separates."""
    return uuid.uuid4().hex


def multipart_part_header(
    boundary: str, content_type: str, extra: Mapping[str, str] | None = None
) -> bytes:
    """The delimiter line and header block that open a part (without the CRLF between parts)."""
    _check_boundary(boundary)
    headers = {"Content-Type": content_type, **(extra or {})}
    if len({name.lower() for name in headers}) != len(headers):
        raise ValueError(f"repeated part header in {list(headers)}")
    lines = [f"--{boundary}"]
    for name, value in headers.items():
        if not name or not set(name) <= _TCHARS:
            raise ValueError(f"invalid part header name {name!r}")
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"invalid value for part header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def part_prefixes(boundary: str) -> Callable[[str], bytes]:
    """For the parts of one multipart body, in order: called with each part's Content-Type, the
    bytes before its body (the CRLF ending the part before, then its delimiter line and header
    block). A body's parts mostly share one Content-Type: each head is made once."""
    _check_boundary(boundary)
    heads: dict[str, bytes] = {}
    separator = b""

    def prefix(content_type: str) -> bytes:
        nonlocal separator
        head = heads.get(content_type)
        if head is None:
            head = heads[content_type] = multipart_part_header(boundary, content_type)
        before, separator = separator, b"\r\n"
        return before + head

    return prefix


def multipart_closing(boundary: str) -> bytes:
    """The close-delimiter, with the CRLF that ends the last part's body (RFC 2046 §5.1.1)."""
    _check_boundary(boundary)
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def iter_multipart_related(
    parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """Frame (content type, body chunks) pairs as one multipart/related body, lazily.

    RFC 2046 requires at least one part: answer an empty result without a multipart body.
    """
    _check_boundary(boundary)  # now, not once the response has started
    return _iter_framed(parts, boundary)


def _iter_framed(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    prefix = part_prefixes(boundary)
    for content_type, chunks in parts:
        yield prefix(content_type)
        for chunk in chunks:
            if chunk:
                yield chunk
    yield multipart_closing(boundary)


def multipart_length(part_sizes_and_types: Iterable[tuple[str, int]], boundary: str) -> int:
    """The exact length of what iter_multipart_related yields for (content type, size) pairs."""
    prefix = part_prefixes(boundary)
    return len(multipart_closing(boundary)) + sum(
        len(prefix(content_type)) + size for content_type, size in part_sizes_and_types
    )


def _check_boundary(boundary: str) -> None:
    """Write strictly: only RFC 2046 bchars, at most 70, never ending in a space."""
    if (
        not 0 < len(boundary) <= MAX_BOUNDARY_LENGTH
        or not set(boundary) <= _BCHARS
        or boundary.endswith(" ")
    ):
        raise ValueError(f"invalid multipart boundary {boundary!r}")


def iter_coalesced(chunks: Iterable[bytes], at_least: int = 1024 * 1024) -> Iterator[bytes]:
    """Fewer, larger writes: each yielded piece costs the server a thread hop and a send.

    Part headers are a few dozen bytes and a CT slice half a MiB; joining them into pieces of a
    few MiB keeps memory bounded while the per-piece cost stops dominating the throughput.
    """
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= at_least:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
