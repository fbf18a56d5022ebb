"""The planned ZIP's format: every range of it is the same bytes, readable by zipfile and unzip,
with ZIP64 structures where sizes, offsets or counts need them (here with small limits)."""

from __future__ import annotations

import io
import random
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange._stored_zip import (
    MemberChanged,
    ReadMember,
    ZipLayout,
    crcs_needed,
    iter_zip_pieces,
    iter_zip_range,
)

STAMP = (2026, 12, 6, 9, 30, 12)


def _members(count: int = 6) -> dict[str, bytes]:
    rng = random.Random(11)
    sizes = [0, 1, 700, 2048, 5000, 12345][:count]
    return {f"PT000000/ST000000/SE000000/IM{n:06d}": rng.randbytes(s) for n, s in enumerate(sizes)}


def _reader(datas: list[bytes]) -> tuple[list[int], ReadMember]:
    opened: list[int] = []

    def read(index: int) -> Iterator[bytes]:
        opened.append(index)
        data = datas[index]
        return (data[at : at + 1000] for at in range(0, len(data), 1000))

    return opened, read


@pytest.mark.parametrize(
    ("zip64_limit", "count_limit"), [(2**31 - 1, 0xFFFF), (1000, 0xFFFF), (2**31 - 1, 3)]
)
def test_every_range_is_the_same_bytes_and_the_whole_unzips(
    tmp_path: Path, zip64_limit: int, count_limit: int
) -> None:
    members = _members()
    datas = list(members.values())
    layout = ZipLayout([(n, len(d)) for n, d in members.items()], STAMP,
                       zip64_limit=zip64_limit, count_limit=count_limit)  # fmt: skip
    _, read = _reader(datas)
    whole = b"".join(iter_zip_range(layout, read, 0, layout.length))
    assert len(whole) == layout.length
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        assert archive.testzip() is None
        assert {i.filename: archive.read(i) for i in archive.infolist()} == members
        assert {i.date_time for i in archive.infolist()} == {STAMP}
    path = tmp_path / "planned.zip"
    path.write_bytes(whole)
    tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0 and "No errors detected" in tested.stdout, tested.stdout
    small = zip64_limit < 2**31 - 1
    assert any(m.zip64 for m in layout.members) == small  # a ZIP64 extra field, 8-byte sizes
    assert (b"PK\x06\x06" in whole) == (small or count_limit < len(members))  # ZIP64 end
    for start in range(0, layout.length, 97):
        for end in (start + 1, start + 333, layout.length):
            part = b"".join(iter_zip_range(layout, read, start, min(end, layout.length)))
            assert part == whole[start : min(end, layout.length)], (start, end)


def test_members_before_the_range_are_read_only_for_the_central_directory() -> None:
    members = _members()
    datas = list(members.values())
    layout = ZipLayout([(n, len(d)) for n, d in members.items()], STAMP)
    opened, read = _reader(datas)
    last = layout.members[-1]
    inside = b"".join(iter_zip_range(layout, read, last.data_start + 10, last.data_end))
    assert inside == datas[-1][10:] and opened == [len(datas) - 1]  # no CRC needed before it
    opened.clear()
    tail = b"".join(iter_zip_range(layout, read, layout.central_offset, layout.length))
    assert sorted(opened) == list(range(len(datas))) and tail.startswith(b"PK\x01\x02")


@pytest.mark.parametrize("change", [b"x", -1])
def test_a_member_of_another_size_than_planned_breaks_the_stream(change: bytes | int) -> None:
    members = _members()
    datas = list(members.values())
    layout = ZipLayout([(n, len(d)) for n, d in members.items()], STAMP)
    datas[3] = datas[3] + change if isinstance(change, bytes) else datas[3][:change]
    _, read = _reader(datas)
    with pytest.raises(MemberChanged, match="IM000003"):
        b"".join(iter_zip_range(layout, read, 0, layout.length))


def test_with_the_crcs_known_no_member_is_read_and_the_spans_are_the_same_bytes() -> None:
    members = _members()
    datas = list(members.values())
    layout = ZipLayout([(n, len(d)) for n, d in members.items()], STAMP)
    opened, read = _reader(datas)
    whole = b"".join(iter_zip_range(layout, read, 0, layout.length))
    crcs = [zlib.crc32(d) for d in datas]
    learnt: list[int] = []
    known: list[int | None] = [None, *crcs[1:]]
    opened.clear()
    tail = b"".join(iter_zip_range(layout, read, layout.central_offset, layout.length, known,
                                   learnt.append))  # fmt: skip
    assert tail == whole[layout.central_offset :]
    assert opened == [0] and known == crcs and learnt == [0]  # only the unknown one was read
    for start in range(0, layout.length, 89):
        for end in (start + 1, start + 400, layout.length):
            end = min(end, layout.length)
            assert set(crcs_needed(layout, start, end)) <= set(range(len(datas)))
            pieces = iter_zip_pieces(layout, crcs.__getitem__, start, end)
            sent = b"".join(p if isinstance(p, bytes) else datas[p.index][p.start : p.end]
                            for p in pieces)  # fmt: skip
            assert sent == whole[start:end], (start, end)
    last = layout.members[-1]
    assert crcs_needed(layout, last.data_start, last.data_end) == []
    assert crcs_needed(layout, last.data_start, last.end) == [len(datas) - 1]
    assert crcs_needed(layout, 0, layout.length) == list(range(len(datas)))
