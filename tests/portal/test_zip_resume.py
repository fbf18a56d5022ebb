"""The ZIP download resumed: Range and If-Range over the real HTTP API (RFC 9110 13.1.5, 14)."""
# ruff: noqa: F811  (the transfers API's `world` fixture, imported, is each test's argument)

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import orjson
import pytest
from pydicom import dcmread

from tests.factories import StudySpec, write_series
from tests.portal.test_transfers_api import World, world  # noqa: F401  (the fixture)


def _url(tid: str) -> str:
    return f"/api/transfers/{tid}/download.zip"


def _get(world: World, tid: str, who: str = "b-receiver", **headers: str) -> httpx.Response:
    return world.http.get(_url(tid), headers={**world.as_(who), **headers})


def _cut_midway(world: World, tid: str) -> tuple[bytes, httpx.Headers]:
    """The first half of the download, then the connection is dropped."""
    received = bytearray()
    client = httpx.Client(base_url=world.server.base_url, timeout=60)
    with client.stream("GET", _url(tid), headers=world.as_("b-receiver")) as response:
        assert response.status_code == 200
        half = int(response.headers["content-length"]) // 2
        for chunk in response.iter_raw(4096):
            received += chunk
            if len(received) >= half:
                break
    client.close()  # the connection goes, the rest unread
    return bytes(received[:half]), response.headers


def _unzipped(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every member's CRC-32 checks
        members = {name: archive.read(name) for name in archive.namelist()}
    return {
        f"{dcmread(io.BytesIO(data)).SOPInstanceUID}.dcm": data
        for name, data in members.items()
        if name != "DICOMDIR"
    }


def test_a_download_cut_midway_resumes_to_the_same_bytes(world: World) -> None:
    studies = [world.studies["one"].study_uid, world.studies["two"].study_uid]
    tid = world.send(studies=studies, send=True).json()["id"]
    head, first = _cut_midway(world, tid)
    etag = first["etag"]
    assert first["accept-ranges"] == "bytes" and etag.startswith('"') and not etag.startswith("W/")
    length = int(first["content-length"])
    rest = _get(world, tid, range=f"bytes={len(head)}-", **{"if-range": etag})
    assert rest.status_code == 206, rest.text
    assert rest.headers["content-range"] == f"bytes {len(head)}-{length - 1}/{length}"
    assert (
        int(rest.headers["content-length"]) == length - len(head) and rest.headers["etag"] == etag
    )
    whole = _get(world, tid)
    assert whole.status_code == 200 and whole.headers["etag"] == etag
    assert head + rest.content == whole.content and len(whole.content) == length
    assert _unzipped(head + rest.content) == world.files  # byte for byte what A stored
    with zipfile.ZipFile(io.BytesIO(whole.content)) as archive:
        assert archive.namelist()[-1] == "DICOMDIR"
    middle = _get(world, tid, range="bytes=100-199", **{"if-range": etag})
    assert middle.status_code == 206 and middle.content == whole.content[100:200]
    suffix = _get(world, tid, range="bytes=-22")
    assert suffix.status_code == 206 and suffix.content == whole.content[-22:]
    assert suffix.content.startswith(b"PK\x05\x06")  # the end of central directory record
    resumed = world.audit(transaction=tid, action="download", outcome="allowed")
    ranges = [orjson.loads(e.detail).get("range") for e in resumed]
    assert f"bytes {len(head)}-{length - 1}/{length}" in ranges and None in ranges
    assert world.get("a-sender", f"/transfers/{tid}").json()["status"] == "downloaded"


def test_a_changed_study_answers_the_whole_new_zip(world: World, tmp_path: Path) -> None:
    one = world.studies["one"]
    tid = world.send(send=True).json()["id"]
    before = _get(world, tid)
    added = write_series(tmp_path / "more", 1, spec=StudySpec(**{**one.__dict__}).new_series(9))
    assert all(o.stored for o in world.server.archive.store_files(added, None, world.pks["A"]))
    after = _get(world, tid, range="bytes=1000-", **{"if-range": before.headers["etag"]})
    assert after.status_code == 200 and "content-range" not in after.headers
    assert after.headers["etag"] != before.headers["etag"]
    assert len(_unzipped(after.content)) == len(_unzipped(before.content)) + 1
    again = _get(world, tid, range="bytes=1000-", **{"if-range": after.headers["etag"]})
    assert again.status_code == 206 and again.content == after.content[1000:]


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=abc", 416),
        ("bytes=", 416),
        ("bytes=20-10", 416),
        ("bytes=-0", 416),
        ("bytes={length}-", 416),
        ("bytes=99999999999-", 416),
        ("items=0-5", 200),  # another unit: ignored
        ("bytes=0-5,10-20", 200),  # several ranges: the whole ZIP
    ],
)
def test_bad_ranges(world: World, header: str, status: int) -> None:
    tid = world.send(send=True).json()["id"]
    length = int(
        world.http.head(_url(tid), headers=world.as_("b-receiver")).headers["content-length"]
    )
    answer = _get(world, tid, range=header.format(length=length))
    assert answer.status_code == status, answer.text
    if status == 416:
        assert answer.headers["content-range"] == f"bytes */{length}"
        assert answer.json()["status"] == 416
    else:
        assert len(answer.content) == length
    weak = _get(world, tid, range="bytes=10-", **{"if-range": 'W/"x"'})
    dated = _get(world, tid, range="bytes=10-", **{"if-range": "Sun, 06 Dec 2026 10:00:00 GMT"})
    assert weak.status_code == dated.status_code == 200


def test_head_is_no_download_and_ranges_are_refused_like_the_download(world: World) -> None:
    tid = world.send(send=True).json()["id"]
    head = world.http.head(_url(tid), headers=world.as_("b-receiver"))
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0 and head.headers["accept-ranges"] == "bytes"
    assert not world.audit(transaction=tid, action="download")
    assert world.get("a-sender", f"/transfers/{tid}").json()["status"] == "on-worklist"
    requester = _get(world, tid, "b-requester", range="bytes=10-")
    stranger = _get(world, tid, "c-user", range="bytes=10-")
    assert (requester.status_code, stranger.status_code) == (403, 404)
    assert world.audit(transaction=tid, action="download", outcome="denied")
