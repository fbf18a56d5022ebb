"""A multipart/related answer of stored blobs, sent from their files (PS3.18 10.4, RFC 2387).

Where the server offers the ASGI zero-copy send extension (`ferry serve` does, on clear-text
connections), each part's body goes as a `http.response.zerocopysend` message naming the
blob's open file: the server sends it with `os.sendfile`, and no byte of it passes through
Python. Elsewhere (another ASGI server, a test transport) the same bytes are read and
streamed. Either way the first blobs are opened before the status line, so a blob missing
from the store is an error response, not a body cut short (dicomweb.streaming).

Files are opened a batch at a time in a worker thread, each with a read-ahead hint, so that
the kernel reads the next blobs while the earlier ones are sent and a series holds a bounded
number of descriptors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from archive.blobstore import BlobStore, ahead_batches, open_ahead
from archive.blobstore import close_all as _close_all
from dicomweb.multipart import (
    iter_coalesced,
    iter_multipart_related,
    multipart_closing,
    multipart_length,
    multipart_part_header,
)
from dicomweb.streaming import PrimedStreamingResponse

ZERO_COPY_SEND = "http.response.zerocopysend"  # the ASGI extension's message and scope key


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
        self._batches = list(ahead_batches(self.parts, lambda part: part.size))
        self._first: list[BinaryIO | OSError] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if ZERO_COPY_SEND not in scope.get("extensions", {}) or not self._batches:
            await super().__call__(scope, receive, send)
            return
        self._first = await anyio.to_thread.run_sync(self._open, self._batches[0])
        if isinstance(self._first[0], OSError):  # before the status line: an error response
            _close_all(self._first)
            raise self._first[0]
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
        heads: dict[str, bytes] = {}  # a series' parts mostly share one Content-Type
        separator = b""
        for number, batch in enumerate(self._batches):
            files = first if number == 0 else await anyio.to_thread.run_sync(self._open, batch)
            with _closing(files):
                for part, file in zip(batch, files, strict=True):
                    if isinstance(file, OSError):
                        raise file  # the response has begun: it is cut short
                    head = heads.get(part.content_type)
                    if head is None:
                        head = multipart_part_header(self.boundary, part.content_type)
                        heads[part.content_type] = head
                    head = separator + head
                    await send({"type": "http.response.body", "body": head, "more_body": True})
                    await send(
                        {
                            "type": ZERO_COPY_SEND,
                            "file": file,
                            "offset": 0,
                            "count": part.size,
                            "more_body": True,
                        }
                    )
                    separator = b"\r\n"
        closing = multipart_closing(self.boundary)
        await send({"type": "http.response.body", "body": closing, "more_body": False})

    def _open(self, batch: Sequence[StoredPart]) -> list[BinaryIO | OSError]:
        """Runs in a worker thread: the batch's files, the kernel asked to read them ahead.

        A blob that cannot be opened is its error, raised when its part's turn comes.
        """
        return open_ahead(self.blobs, (part.key for part in batch))


@contextlib.contextmanager
def _closing(files: list[BinaryIO | OSError]) -> Iterator[None]:
    try:
        yield
    finally:
        _close_all(files)
