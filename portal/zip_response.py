"""The ZIP download's response: members' data sent from the blobs' files where it can be.

When every CRC-32 the asked bytes hold is in the index (`ZipDownload.crcs_known`; the first
download of a study puts them there) and the server offers the ASGI zero-copy send extension
(`ferry serve` on clear-text connections, `ferry.zero_copy`), the headers, descriptors and the
central directory go as small body messages and each member's data as a
`http.response.zerocopysend` naming the blob's open file: no byte of a blob passes through
Python. Otherwise the ZIP streams through the process (`exchange.downloads.iter_zip`), which
works out the missing CRCs and keeps them.

`finished` is called with None once every byte is handed over, or, on the zero-copy path, just
before the last small bytes (the end of the central directory) are: a client that has the whole
ZIP then finds the transfer marked. It is called with the error when the response breaks off (the
error is raised on: the connection ends before the central directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from archive.blobstore import BlobStore, ahead_batches, close_all, open_ahead
from exchange.downloads import MemberChanged, ZipDownload

ZERO_COPY_SEND = "http.response.zerocopysend"  # the ASGI extension's message and scope key
_SMALL_BYTES = 64 * 1024  # headers and descriptors gathered into one message up to this

Finished = Callable[[Exception | None], None]


class ZipResponse(StreamingResponse):
    """`application/zip` bytes `start` to `end` of a planned ZIP, with their Content-Length."""

    def __init__(
        self,
        streamed: Iterator[bytes],
        status: int,
        headers: Mapping[str, str],
        *,
        blobs: BlobStore,
        download: ZipDownload,
        span: tuple[int, int],
        finished: Finished,
    ) -> None:
        super().__init__(streamed, status, headers, media_type="application/zip")
        self.blobs, self.download, self.finished = blobs, download, finished
        self.start, self.end = span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._zero_copy = ZERO_COPY_SEND in scope.get("extensions", {}) and (
            self.download.crcs_known(self.start, self.end)
        )
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        if not self._zero_copy:
            await super().stream_response(send)
            return
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        try:
            tail = await self._send_pieces(send)
        except Exception as error:
            await anyio.to_thread.run_sync(self.finished, error)
            raise
        # What a whole download marks is done before its last bytes leave, so a client that has
        # them all (and the page it loads next) sees it.
        await anyio.to_thread.run_sync(self.finished, None)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _send_pieces(self, send: Send) -> bytes:
        """Sends all but the last small bytes (the end of the central directory, when the range
        reaches it), which it returns."""
        download = self.download
        batches = _batches(download, self.start, self.end)
        files: dict[int, BinaryIO | Exception] = {}
        small: list[bytes] = []
        size = 0
        try:
            for piece in download.pieces(self.start, self.end):
                if isinstance(piece, bytes):
                    small.append(piece)
                    size += len(piece)
                    if size >= _SMALL_BYTES and len(small) > 1:  # the newest may be the last
                        body = b"".join(small[:-1])
                        await send({"type": "http.response.body", "body": body,
                                    "more_body": True})  # fmt: skip
                        small, size = [piece], len(piece)
                    continue
                if small:
                    body = b"".join(small)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    small, size = [], 0
                if piece.index not in files:
                    close_all(f for f in files.values() if not isinstance(f, Exception))
                    files = await anyio.to_thread.run_sync(self._open, next(batches))
                file = files[piece.index]
                if isinstance(file, Exception):
                    raise file
                await send({"type": ZERO_COPY_SEND, "file": file, "offset": piece.start,
                            "count": piece.end - piece.start, "more_body": True})  # fmt: skip
            return b"".join(small)
        finally:
            close_all(f for f in files.values() if not isinstance(f, Exception))

    def _open(self, indexes: list[int]) -> dict[int, BinaryIO | Exception]:
        """Runs in a worker thread: the batch's blobs, read ahead, each checked to be the size
        planned (a blob's key names the same bytes for good; a size that differs is a file
        changed behind the index, and never sent under the CRC the index holds)."""
        instances = self.download.instances
        opened = open_ahead(self.blobs, (instances[i].blob_key for i in indexes))
        files: dict[int, BinaryIO | Exception] = dict(zip(indexes, opened, strict=True))
        for index, file in files.items():
            planned = instances[index].size
            if not isinstance(file, Exception) and os.fstat(file.fileno()).st_size != planned:
                file.close()
                name = self.download.layout.members[index].name.decode()
                files[index] = MemberChanged(f"{name} is no longer the {planned} bytes planned")
        return files


def _batches(download: ZipDownload, start: int, end: int) -> Iterator[list[int]]:
    """The blobs whose data the range holds, in order, a few at a time."""
    members = download.layout.members[: len(download.instances)]
    held = (i for i, m in enumerate(members) if m.data_start < end and m.data_end > start)
    return ahead_batches(held, lambda index: members[index].size)
