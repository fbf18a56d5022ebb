"""The file pynetdicom writes a C-STORE data set into as it arrives, in the archive's spool.

pynetdicom writes it from the association's DUL thread, as the PDUs are decoded. A full disk
there would be an exception in that thread, and the association would be lost with no answer;
the sender never learns to come back later. `SpoolFile` turns "no space" into a mark instead:
it stops writing, drops the rest of the data set, and the C-STORE handler answers Out of
Resources (0xA700), which a sender retries. Marks are kept by file name until the handler has
answered.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import uuid
from pathlib import Path

from foundation.errors import is_disk_full
from foundation.writeback import WriteBehind

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
    """A NamedTemporaryFile look-alike (write, flush, close, name, file) that survives ENOSPC.

    Written with `os.write` on its descriptor: unbuffered, so "no space" comes from the write
    that found it, and without a file object (or NamedTemporaryFile's wrapper, which looked up
    and wrapped `write` again on every fragment) between pynetdicom and the system call.
    """

    def __init__(self, folder: Path, prefix: str) -> None:
        self.file = self  # pynetdicom flushes `file.file`, as on a NamedTemporaryFile
        self._cut = False
        self._writer: WriteBehind | None = None  # None once closed, or never opened
        self.name: str = str(folder / f"{prefix}{secrets.token_hex(8)}.dcm")
        try:
            fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self._writer = WriteBehind(fd)
        except OSError as error:
            if not is_disk_full(error):
                raise
            self.name = str(folder / f"{prefix}unwritten-{uuid.uuid4().hex}.dcm")
            self._mark()

    def write(self, data: bytes) -> int:
        if not self._cut and self._writer is not None:
            try:
                self._writer.write(data)
            except OSError as error:
                self._give_up(error)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(OSError):  # already answered for; nothing is buffered
                writer.close()

    def _give_up(self, error: OSError) -> None:
        if not is_disk_full(error):
            raise error
        self._mark()
        if self._writer is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._writer.fd, 0)  # give back what was written: the disk is full

    def _mark(self) -> None:
        self._cut = True
        with _lock:
            _cut_short.add(self.name)
