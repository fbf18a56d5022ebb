"""A deflated file read as if it were not (PS3.5 A.5): the meta as stored, the data set inflated.

Positions before `start` (the preamble and File Meta) are the file's own; from `start` on they
count inflated bytes, so frame offsets found in a deflated instance read back through this view.
Inflating runs forward; a seek backwards starts again from `start`. Deflated instances are rare
and small, and only the frames asked for are inflated up to.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

_CHUNK = 256 * 1024


class InflatedFile:
    """Read-only, seekable view of a deflated Part 10 file as its inflated equivalent."""

    def __init__(self, handle: BinaryIO, start: int) -> None:
        self.handle = handle
        self.start = start
        self._position = 0
        self._restart()

    def _restart(self) -> None:
        self.handle.seek(self.start)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._inflated = self.start  # position just past what has been inflated
        self._pending = b""  # inflated, not yet consumed; ends at self._inflated

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = offset if whence == 0 else self._position + offset
        return self._position

    def read(self, count: int = -1) -> bytes:
        if self._position < self.start:
            self.handle.seek(self._position)
            wanted = self.start - self._position if count < 0 else count
            data = self.handle.read(min(wanted, self.start - self._position))
            self._position += len(data)
            return data
        if self._position < self._inflated - len(self._pending):
            self._restart()
        self._pending = self._pending[self._position - (self._inflated - len(self._pending)) :]
        while count < 0 or len(self._pending) < count:
            raw = self.handle.read(_CHUNK)
            more = self._inflater.decompress(raw) if raw else self._inflater.flush()
            if not raw and not more:
                break
            self._pending += more
            self._inflated += len(more)
            # skip what lies before the position without keeping it
            behind = self._position - (self._inflated - len(self._pending))
            if behind > 0:
                self._pending = self._pending[behind:]
        data = self._pending if count < 0 else self._pending[:count]
        self._pending = self._pending[len(data) :]
        self._position += len(data)
        return data

    def close(self) -> None:
        self.handle.close()
