"""The file pynetdicom writes a C-STORE data set into as it arrives, in the archive's spool.

pynetdicom writes from the association's reactor thread. A full disk there would be an
exception in that thread, and the association would be lost with no answer; the sender never
learns to come back later. `SpoolFile` turns "no space" into a mark instead: it stops writing,
drops the rest of the data set, and the C-STORE handler answers Out of Resources (0xA700),
which a sender retries. Marks are kept by file name until the handler has answered.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import IO

from foundation.errors import is_disk_full

_cut_short: set[str] = set()
_lock = threading.Lock()


def was_cut_short(name: str) -> bool:
    """Whether the disk filled while this file was written; forgets the mark."""
    with _lock:
        if name in _cut_short:
            _cut_short.discard(name)
            return True
    return False


class SpoolFile:
    """A NamedTemporaryFile look-alike (write, flush, close, name, file) that survives ENOSPC."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.file = self  # pynetdicom flushes `file.file`, as on a NamedTemporaryFile
        self._stream: IO[bytes]
        try:  # unbuffered: "no space" comes from the write that found it, not a later flush
            self._stream = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by close())
                delete=False, mode="wb", buffering=0, suffix=".dcm", dir=folder, prefix=prefix
            )
            self.name: str = self._stream.name
        except OSError as error:
            if not is_disk_full(error):
                raise
            self._stream = open(os.devnull, "wb")  # noqa: SIM115 (closed by close())
            self.name = str(folder / f"{prefix}unwritten-{uuid.uuid4().hex}.dcm")
            self._mark()

    def write(self, data: bytes) -> int:
        if not self._marked():
            view = memoryview(data)
            try:
                while view:
                    written = self._stream.write(view)
                    if not written:  # a regular file writes something or says why not
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[written:]
            except OSError as error:
                self._give_up(error)
        return len(data)

    def flush(self) -> None:
        if not self._marked():
            try:
                self._stream.flush()
            except OSError as error:
                self._give_up(error)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already answered for; nothing is buffered
            self._stream.close()

    def _give_up(self, error: OSError) -> None:
        if not is_disk_full(error):
            raise error
        self._mark()
        with contextlib.suppress(OSError, ValueError):
            self._stream.truncate(0)  # give back what was written: the disk is full

    def _mark(self) -> None:
        with _lock:
            _cut_short.add(self.name)

    def _marked(self) -> bool:
        with _lock:
            return self.name in _cut_short
