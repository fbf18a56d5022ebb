"""ASGI zero-copy send (the `http.response.zerocopysend` extension) for uvicorn's HTTP protocol.

uvicorn does not implement the extension; `ferry.http_server` adds it to its httptools protocol
on clear-text connections. A `http.response.zerocopysend` message names an open file, an offset
and a count; those bytes go from the page cache to the socket by `os.sendfile`, on the event
loop, without being read into Python or copied by the process: a WADO-RS retrieve of stored
instances then costs a fraction of the CPU time per byte (bench/README.md, issue 14).

Ferry's own extension beside it, `ferry.file_parts`, sends many such spans in one message:
`parts` lists `(prefix, file, offset, count)`, each the prefix's bytes and then the file's span.
A multipart answer of a hundred blobs (a series retrieve) then passes a message per batch of
files through the middlewares' `send` instead of two per part (a head, then the file), the
heads written straight to the transport: a tenth of the retrieve's CPU time (bench/README.md).

What the message needs from the connection:

- the transport's write buffer is empty first (bytes written before the file go out before
  it): while a zero-copy response runs, the buffer's high-water mark is 0, so uvicorn's flow
  control waits for it to be empty before anything more is written;
- a full socket (EAGAIN) is waited for with a writer callback on a duplicate of the socket's
  descriptor, since event loops refuse callbacks on a descriptor their transport owns;
- the bytes count against the response's Content-Length like any body message; a response
  sent with chunked encoding, or a file with no descriptor, is read and sent as ordinary body
  bytes instead.

A blob the page cache does not hold is read from disk inside `sendfile`, on the event loop;
the response asks the kernel to read its files ahead (`POSIX_FADV_WILLNEED`) when it opens
them, in a worker thread, so that the wait is short where it happens at all.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

ZERO_COPY_SEND = "http.response.zerocopysend"
FILE_PARTS = "ferry.file_parts"  # the extension's scope key and message type
_FALLBACK_PIECE = 1024 * 1024
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})


class ZeroCopySender:
    """The connection's side of zero-copy sends: one per connection, used by one cycle at a time."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._socket_fd: int = transport.get_extra_info("socket").fileno()
        self._writer_fd: int | None = None  # a duplicate, for writability callbacks
        self._waiter: asyncio.Future[None] | None = None
        self._limits: tuple[int, int] | None = None
        self._lost = False

    def sending(self, cycle: RequestResponseCycle) -> Any:
        """The ASGI send callable for `cycle`: its own, plus zero-copy messages."""

        async def send(message: Any) -> None:
            if message["type"] == ZERO_COPY_SEND:
                await self._send_file(cycle, message)
            elif message["type"] == FILE_PARTS:
                await self._send_parts(cycle, message)
            else:
                await cycle.send(message)
            if cycle.response_complete or cycle.disconnected:
                self._restore_limits()

        return send

    def connection_lost(self) -> None:
        """Wake a send waiting for room; the duplicate descriptor goes once no callback uses it."""
        self._lost = True
        if self._waiter is not None:
            _resolve(self._waiter)
        else:
            self._close_duplicate()

    async def _send_file(self, cycle: RequestResponseCycle, message: Any) -> None:
        _check_in_body(cycle, ZERO_COPY_SEND)
        file = message["file"]
        offset, count = _span(file, message.get("offset"), message.get("count"))
        await self._send_span(cycle, b"", file, offset, count)
        await _end_unless_more(cycle, message)

    async def _send_parts(self, cycle: RequestResponseCycle, message: Any) -> None:
        _check_in_body(cycle, FILE_PARTS)
        for prefix, file, offset, count in message["parts"]:
            if offset < 0 or count < 0:
                raise ValueError(f"negative offset or count in {FILE_PARTS!r}: {offset}, {count}")
            await self._send_span(cycle, bytes(prefix), file, offset, count)
        await _end_unless_more(cycle, message)

    async def _send_span(
        self, cycle: RequestResponseCycle, prefix: bytes, file: Any, offset: int, count: int
    ) -> None:
        """`prefix`, then `count` bytes of `file` from `offset`."""
        if cycle.disconnected or cycle.scope["method"] == "HEAD":
            return  # nothing goes out; uvicorn's own body handling ends the response
        if cycle.chunked_encoding or not _has_descriptor(file):
            if prefix:
                await cycle.send({"type": "http.response.body", "body": prefix, "more_body": True})
            await _send_read(cycle, file, offset, count)
            return
        if len(prefix) + count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if prefix:
            self.transport.write(prefix)  # after what the buffer holds; sent before the file
        await self._flushed(cycle)
        if not cycle.disconnected:
            await self._sendfile(cycle, file.fileno(), offset, count)
        cycle.expected_content_length -= len(prefix) + count

    async def _flushed(self, cycle: RequestResponseCycle) -> None:
        """Until the transport's buffer is empty: bytes written earlier go out first."""
        if self._limits is None:
            self._limits = self.transport.get_write_buffer_limits()
            self.transport.set_write_buffer_limits(high=0)  # paused until empty (uvicorn's flow)
        while self.transport.get_write_buffer_size() and not cycle.disconnected:
            await cycle.flow.drain()

    async def _sendfile(
        self, cycle: RequestResponseCycle, file_fd: int, offset: int, count: int
    ) -> None:
        end = offset + count
        while offset < end:
            try:
                sent = os.sendfile(self._socket_fd, file_fd, offset, end - offset)
            except BlockingIOError:
                if await self._writable():
                    continue
                sent = -1
            except OSError as error:
                if error.errno not in _GONE:
                    raise
                sent = -1
            if sent < 0:  # the client went away: what follows is dropped, as uvicorn drops it
                cycle.disconnected = True
                self.transport.close()
                return
            if sent == 0:
                raise RuntimeError(f"file ended {end - offset} bytes before the count sent")
            offset += sent

    async def _writable(self) -> bool:
        """Until the socket takes more; False when the connection is gone."""
        if self._lost or self.transport.is_closing():
            return False
        loop = asyncio.get_running_loop()
        if self._writer_fd is None:
            self._writer_fd = os.dup(self._socket_fd)
        fd = self._writer_fd
        waiter = self._waiter = loop.create_future()
        loop.add_writer(fd, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            loop.remove_writer(fd)
            if self._lost:
                self._close_duplicate()
        return not self._lost

    def _close_duplicate(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None

    def _restore_limits(self) -> None:
        if self._limits is not None:
            low, high = self._limits
            self._limits = None
            if not self.transport.is_closing():
                self.transport.set_write_buffer_limits(high=high, low=low)


def _check_in_body(cycle: RequestResponseCycle, kind: str) -> None:
    if not cycle.response_started or cycle.response_complete:
        raise RuntimeError(f"unexpected ASGI message {kind!r} outside a response body")


async def _end_unless_more(cycle: RequestResponseCycle, message: Any) -> None:
    if not message.get("more_body", False):
        await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _has_descriptor(file: Any) -> bool:
    try:
        file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True


def _span(file: Any, offset: int | None, count: int | None) -> tuple[int, int]:
    """The extension's defaults: from the file's position, to its end."""
    if offset is None:
        offset = file.tell()
    if count is None:
        file.seek(0, os.SEEK_END)
        count = file.tell() - offset
    if offset < 0 or count < 0:
        raise ValueError(f"negative offset or count in {ZERO_COPY_SEND!r}: {offset}, {count}")
    return offset, count


async def _send_read(cycle: RequestResponseCycle, file: Any, offset: int, count: int) -> None:
    """The portable way: the bytes read (in a worker thread) and sent as body messages."""
    while count > 0:
        piece = await asyncio.to_thread(_read_at, file, offset, min(count, _FALLBACK_PIECE))
        if not piece:
            raise RuntimeError(f"file ended {count} bytes before the count sent")
        await cycle.send({"type": "http.response.body", "body": piece, "more_body": True})
        offset, count = offset + len(piece), count - len(piece)


def _read_at(file: Any, offset: int, size: int) -> bytes:
    file.seek(offset)
    return bytes(file.read(size))
