"""Starting write-back early (`foundation.writeback`): a hint that never fails a store."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from foundation import writeback
from foundation.writeback import WRITEBACK_BYTES, WriteBehind, start_file_writeback, start_writeback


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


def test_write_behind_writes_every_byte_and_starts_each_range_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int]] = []
    real = writeback._sync_file_range

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        started.append((offset, length))
        return real(fd, offset, length, flags) if real is not None else 0

    monkeypatch.setattr(writeback, "_sync_file_range", recording)
    path = tmp_path / "part"
    data = os.urandom(3 * WRITEBACK_BYTES + 1000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        behind = WriteBehind(fd)
        for offset in range(0, len(data), 100_000):  # pieces that straddle the ranges
            behind.write(memoryview(data)[offset : offset + 100_000])
        behind.finish()
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    # Contiguous, in order, from the start: each started once, the last one by `finish`.
    assert started[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(started))
    assert all(length >= WRITEBACK_BYTES for _, length in started[:-1])
    assert sum(length for _, length in started) == len(data)


def test_write_behind_with_nothing_new_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        started.append((offset, length))
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", recording)
    fd = os.open(tmp_path / "part", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        behind = WriteBehind(fd)
        behind.finish()  # an empty part
        behind.write(b"x" * WRITEBACK_BYTES)
        behind.finish()  # already started with the write
    finally:
        os.close(fd)
    assert started == [(0, WRITEBACK_BYTES)]


def test_write_behind_closes_its_descriptor_once(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_WRONLY | os.O_CREAT, 0o600)
    behind = WriteBehind(fd)
    behind.write(b"whole")
    behind.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    reopened = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)  # may reuse the number
    try:
        behind.close()  # a second close must not close what now holds that number
        os.fstat(reopened)
    finally:
        os.close(reopened)
    assert (tmp_path / "part").read_bytes() == b"whole"
