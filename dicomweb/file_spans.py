"""A body made of byte spans of one stored file, sent from the file where the server can.

Frames and bulk data are ranges of the stored instance: a multi-frame's native frames one after
another, a fragment or several per compressed frame, one byte range of a value. Where the server
offers `ferry.file_parts` (`ferry serve` does, on clear-text connections: `ferry/zero_copy.py`),
the response opens the file in a worker thread before the status line (a blob gone from the
store is then an error response, not a body cut short), asks the kernel to read the spans
ahead, and sends one message listing every span with the bytes that go before it (a part's
head): the server writes those and sends the spans with `os.sendfile`, so no byte of the file
passes through Python and no chunk costs a hop to a worker thread. Elsewhere (another ASGI
server, a test transport) the response streams `chunks`, the same bytes read from the file.

Only bytes the file holds as sent can go this way: frames to be decoded, bit-packed frames to
be re-aligned and the values of a deflated file are streamed (dicomweb.pixels decides).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from archive.blobstore import BlobStore, read_ahead
from dicomweb.multipart import multipart_closing, part_prefixes
from dicomweb.streaming import PrimedStreamingResponse

FILE_PARTS = "ferry.file_parts"  # the server's extension: its scope key and message type

Span = tuple[bytes, int, int]  # the bytes before it, then (file offset, byte count)


def file_parts_offered(scope: Scope) -> bool:
    return FILE_PARTS in scope.get("extensions", {})


def multipart_spans(
    boundary: str, parts: Iterable[tuple[str, Sequence[tuple[int, int]]]]
) -> list[Span]:
    """The spans of a multipart/related body of (content type, file ranges) parts, each part's
    head before its first range; `multipart_closing(boundary)` ends the body."""
    spans: list[Span] = []
    prefixes = part_prefixes(boundary)
    for content_type, ranges in parts:
        prefix = prefixes(content_type)
        if not ranges:  # an empty part is its head
            spans.append((prefix, 0, 0))
        for offset, count in ranges:
            spans.append((prefix, offset, count))
            prefix = b""
    return spans


class FileSpansResponse(PrimedStreamingResponse):
    """`spans` of the blob `key`, then `ending`: the bytes `chunks` streams where the server
    cannot send them from the file."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        blobs: BlobStore,
        key: str,
        spans: Sequence[Span],
        ending: bytes = b"",
        *,
        status_code: int = 200,
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(chunks, status_code=status_code, media_type=media_type, headers=headers)
        self.blobs, self.key, self.spans, self.ending = blobs, key, list(spans), ending
        self._file: BinaryIO | None = None

    @classmethod
    def multipart(
        cls,
        chunks: Iterable[bytes],
        blobs: BlobStore,
        key: str,
        boundary: str,
        parts: Iterable[tuple[str, Sequence[tuple[int, int]]]],
        *,
        media_type: str,
        headers: Mapping[str, str],
    ) -> FileSpansResponse:
        """A multipart/related body of (content type, file ranges) parts of the blob `key`."""
        spans = multipart_spans(boundary, parts)
        ending = multipart_closing(boundary)
        return cls(chunks, blobs, key, spans, ending, media_type=media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not file_parts_offered(scope):
            await super().__call__(scope, receive, send)
            return
        self._file = await anyio.to_thread.run_sync(self._open)  # before the status line
        try:
            await StreamingResponse.__call__(self, scope, receive, send)
        finally:
            self._file.close()

    async def stream_response(self, send: Send) -> None:
        file = self._file
        if file is None:  # the server offers no `ferry.file_parts`: `chunks` are streamed
            await super().stream_response(send)
            return
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        parts = [(prefix, file, offset, count) for prefix, offset, count in self.spans]
        await send({"type": FILE_PARTS, "parts": parts, "more_body": True})
        await send({"type": "http.response.body", "body": self.ending, "more_body": False})

    def _open(self) -> BinaryIO:
        """Runs in a worker thread: the file, the kernel asked to read the spans' extent."""
        file = self.blobs.open_unbuffered(self.key)
        with_bytes = [(offset, count) for _, offset, count in self.spans if count]
        if with_bytes:
            first = min(offset for offset, _ in with_bytes)
            last = max(offset + count for offset, count in with_bytes)
            read_ahead(file, first, last - first)
        return file
