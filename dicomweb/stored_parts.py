"""A multipart/related answer of stored blobs, sent from their files (PS3.18 10.4, RFC 2387).

Where the server offers `ferry.file_parts` (`ferry serve` does, on clear-text connections,
beside the ASGI zero-copy send extension: `ferry/zero_copy.py`), each batch of parts goes as
one message listing each part's head and the blob's open file: the server writes the head and
sends the file with `os.sendfile`, and no byte of a blob passes through Python. Elsewhere
(another ASGI server, a test transport) the same bytes are read and streamed. Either way the
first blobs are opened before the status line, so a blob missing from the store is an error
response, not a body cut short (dicomweb.streaming).

Files are opened a batch at a time in a worker thread, each with a read-ahead hint, the next
batch while the current one is sent: the kernel reads the next blobs while the earlier ones
go out, and a series holds a bounded number of descriptors. The first batch is small (it is
opened before the status line, where a client waits for it) and can be opened by the route's
own worker thread (`open_first`), in the hop that found the instances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from archive.blobstore import BlobStore, ahead_batches, open_ahead
from archive.blobstore import close_all as _close_all
from dicomweb.file_spans import FILE_PARTS, file_parts_offered
from dicomweb.multipart import (
    iter_coalesced,
    iter_multipart_related,
    multipart_closing,
    multipart_length,
    part_prefixes,
)
from dicomweb.streaming import PrimedStreamingResponse

FIRST_BATCH_FILES = 4  # opened before the status line; the rest while earlier parts are sent

_Opened = list[BinaryIO | OSError]


@dataclass(frozen=True)
class StoredPart:
    """One part: a blob sent as stored, under its Content-Type."""

    content_type: str
    key: str
    size: int


class StoredPartsResponse(PrimedStreamingResponse):
    """multipart/related of blobs as stored, with its Content-Length."""

    def __init__(self, blobs: BlobStore, parts: Sequence[StoredPart], boundary: str) -> None:
        self.blobs = blobs
        self.parts = list(parts)
        self.boundary = boundary
        chunks = iter_coalesced(
            iter_multipart_related(
                ((part.content_type, blobs.iter_chunks(part.key)) for part in self.parts),
                boundary,
            )
        )
        length = multipart_length(((p.content_type, p.size) for p in self.parts), boundary)
        super().__init__(
            chunks,
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
            headers={"Content-Length": str(length)},
        )
        first, rest = self.parts[:FIRST_BATCH_FILES], self.parts[FIRST_BATCH_FILES:]
        self._batches = [first, *ahead_batches(rest, lambda part: part.size)] if first else []
        self._first: _Opened | None = None

    def open_first(self, scope: Scope) -> None:
        """Blocks: the first batch's files, where the server will send them itself, opened now.

        For a route that found the parts in a worker thread: opening them there saves the
        response a hop of its own before the status line. Raises the first blob's OSError.
        """
        if self._first is None and self._batches and file_parts_offered(scope):
            self._first = _opened_or_raise(self._open(self._batches[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not file_parts_offered(scope) or not self._batches:
            await super().__call__(scope, receive, send)
            return
        if self._first is None:  # before the status line: an error response
            self._first = _opened_or_raise(
                await anyio.to_thread.run_sync(self._open, self._batches[0])
            )
        try:
            await StreamingResponse.__call__(self, scope, receive, send)
        finally:
            if self._first is not None:  # the client left before the body began
                _close_all(self._first)
                self._first = None

    async def stream_response(self, send: Send) -> None:
        first, self._first = self._first, None
        if first is None:
            await super().stream_response(send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        prefix = part_prefixes(self.boundary)
        files: _Opened = first
        following: asyncio.Task[_Opened] | None = None
        try:
            for number, batch in enumerate(self._batches):
                if following is not None:
                    files, following = await following, None
                if number + 1 < len(self._batches):  # opened while this batch is sent
                    following = asyncio.ensure_future(
                        anyio.to_thread.run_sync(self._open, self._batches[number + 1])
                    )
                with _closing(files):
                    spans: list[tuple[bytes, BinaryIO, int, int]] = []
                    failed: OSError | None = None
                    for part, file in zip(batch, files, strict=True):
                        if isinstance(file, OSError):
                            failed = file
                            break
                        spans.append((prefix(part.content_type), file, 0, part.size))
                    if spans:
                        await send({"type": FILE_PARTS, "parts": spans, "more_body": True})
                    if failed is not None:
                        raise failed  # the response has begun: it is cut short
        finally:
            if following is not None:  # cut short: the batch opened meanwhile is closed
                await _close_when_opened(following)
        closing = multipart_closing(self.boundary)
        await send({"type": "http.response.body", "body": closing, "more_body": False})

    def _open(self, batch: Sequence[StoredPart]) -> _Opened:
        """Runs in a worker thread: the batch's files, the kernel asked to read them ahead.

        A blob that cannot be opened is its error, raised when its part's turn comes.
        """
        return open_ahead(self.blobs, (part.key for part in batch))


async def _close_when_opened(opening: asyncio.Task[_Opened]) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        _close_all(await opening)


def _opened_or_raise(files: _Opened) -> _Opened:
    """The files, or the first one's error with every file closed."""
    if isinstance(files[0], OSError):
        _close_all(files)
        raise files[0]
    return files


@contextlib.contextmanager
def _closing(files: _Opened) -> Iterator[None]:
    try:
        yield
    finally:
        _close_all(files)
