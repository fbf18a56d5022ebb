"""Starting write-back early (`foundation.writeback`): a hint that never fails a store."""

from __future__ import annotations

import os
from pathlib import Path

from foundation.writeback import start_file_writeback, start_writeback


def test_the_file_is_unchanged_and_still_written_after_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "received.dcm"
    data = os.urandom(600_000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, data[:300_000])
        start_writeback(fd, 0, 300_000)
        os.write(fd, data[300_000:])
    finally:
        os.close(fd)
    start_file_writeback(path)
    assert path.read_bytes() == data


def test_a_file_gone_or_a_closed_descriptor_is_no_error(tmp_path: Path) -> None:
    start_file_writeback(tmp_path / "gone.dcm")
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)
    start_writeback(fd)  # EBADF is ignored: the flush that follows is what counts
