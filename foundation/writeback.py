"""Starting a file's write-back early: the `fsync` that makes it durable later waits less.

A received data set is flushed (`fsync`) before the sender is told it is stored; the flush
writes the file's data, then commits the filesystem's journal. `sync_file_range(2)` with
`SYNC_FILE_RANGE_WRITE` asks the kernel to start writing a range now and returns without
waiting, so the data goes to the disk while the rest of the file is still arriving and while it
is parsed and checked. It makes nothing durable (no metadata, no journal, no device cache
flush): the `fsync` is still what the durability rests on. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable

_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>
# Every this many bytes written, the disk starts writing them: large enough that the requests
# are few, small enough that the data is on its way while the rest still arrives.
WRITEBACK_BYTES = 256 * 1024


def _load() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    call = getattr(ctypes.CDLL(name, use_errno=True), "sync_file_range", None) if name else None
    if call is None:
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call  # type: ignore[no-any-return]


_sync_file_range = _load()


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Starts writing `length` bytes from `offset` of `fd` (0: to the end); never raises."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def start_file_writeback(path: str | os.PathLike[str]) -> None:
    """The same for a whole file named by `path`; a file that is gone is no error."""
    if _sync_file_range is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


class WriteBehind:
    """Writes to `fd` unbuffered, and starts the write-back every `WRITEBACK_BYTES`.

    Once the file is whole, `finish` starts the rest. Nothing here waits for the disk or makes
    anything durable.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd  # the writer's to close (`close`)
        self._written = 0
        self._started = 0  # bytes whose write-back was started

    def write(self, data: bytes | memoryview) -> None:
        """All of `data`, or OSError (ENOSPC when the disk takes nothing more)."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            if not written:  # a regular file writes something or says why not
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
            self._written += written
        if self._written - self._started >= WRITEBACK_BYTES:
            self._start()

    def finish(self) -> None:
        if self._written > self._started:
            self._start()

    def close(self) -> None:
        """Closes the descriptor; later calls do nothing."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def _start(self) -> None:
        start_writeback(self.fd, self._started, self._written - self._started)
        self._started = self._written
