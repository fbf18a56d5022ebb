"""The ZIP download and the blobs' CRC-32s the index keeps (`instance.crc32`).

The first download reads every blob through the server and keeps its CRC; later ones send
the blobs from their files (`os.sendfile`) under the CRCs kept. Both are the same bytes, every
range of them too, and a blob whose CRC is not (or no longer) known is read again for it.
"""
# ruff: noqa: F811  (the transfers API's `world` fixture, imported, is each test's argument)

from __future__ import annotations

import io
import subprocess
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from archive.blobstore import FilesystemBlobStore
from archive.models import Instance
from archive.store import Archive
from tests.factories import StudySpec, ct_slice
from tests.portal.test_transfers_api import World, world  # noqa: F401  (the fixture)


def _download(world: World, tid: str, **headers: str) -> httpx.Response:
    url = f"/api/transfers/{tid}/download.zip"
    answer = world.http.get(url, headers={**world.as_("b-receiver"), **headers})
    assert answer.status_code in (200, 206), answer.text
    return answer


def _kept(world: World) -> dict[str, int | None]:
    """Each instance's CRC-32 as the index keeps it, by blob key."""
    with world.server.archive.engine.connect() as connection:
        return dict(connection.execute(select(Instance.blob_key, Instance.crc32)).all())


def _first_key(world: World) -> str:
    """The blob of the first instance of study "one" (the transfer's by default)."""
    return world.server.archive.find_instances(world.studies["one"].study_uid)[0].blob_key


def _blob(world: World, key: str) -> bytes:
    return (world.server.settings.blob_dir / key).read_bytes()


def _checked(data: bytes) -> dict[str, tuple[int, bytes]]:
    """Each member's CRC-32 and bytes, after `zipfile` checked every CRC."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {i.filename: (i.CRC, archive.read(i)) for i in archive.infolist()}


def test_the_first_download_keeps_each_crc_and_the_next_sends_the_same_bytes(
    world: World, tmp_path: Path
) -> None:
    tid = world.send(send=True).json()["id"]
    assert set(_kept(world).values()) == {None}  # stored: no CRC worked out at ingest
    first = _download(world, tid)
    kept = _kept(world)
    one = world.server.archive.find_instances(world.studies["one"].study_uid)
    assert all(kept[i.blob_key] == zlib.crc32(_blob(world, i.blob_key)) for i in one)
    assert all(i.crc32 == kept[i.blob_key] for i in one)
    second = _download(world, tid)  # from the files, under the kept CRCs
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    members = _checked(second.content)
    sent = {data: crc for crc, data in members.values()}
    assert {sent[_blob(world, i.blob_key)] for i in one} == {kept[i.blob_key] for i in one}
    assert len(members) == len(one) + 1  # and the DICOMDIR
    path = tmp_path / "sent.zip"
    path.write_bytes(second.content)
    tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0 and "No errors detected" in tested.stdout, tested.stdout
    assert world.get("a-sender", f"/transfers/{tid}").json()["status"] == "downloaded"


def test_the_kept_crc_is_what_goes_out_no_blob_is_read_for_it(world: World) -> None:
    tid = world.send(send=True).json()["id"]
    _download(world, tid)
    key = _first_key(world)
    with world.server.archive.engine.begin() as connection:  # a wrong CRC, to see where it goes
        connection.execute(update(Instance).where(Instance.blob_key == key).values(crc32=7))
    data = _download(world, tid).content
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        [wrong] = [i for i in archive.infolist() if i.CRC == 7]
        assert wrong.file_size == len(_blob(world, key))
        with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
            archive.read(wrong)  # the blob's own bytes, under the CRC the index gave
        assert all(archive.read(i) for i in archive.infolist() if i is not wrong)


def test_a_blob_whose_crc_is_unknown_is_read_for_it_and_its_crc_kept(world: World) -> None:
    tid = world.send(send=True).json()["id"]
    whole = _download(world, tid).content
    key = _first_key(world)
    with world.server.archive.engine.begin() as connection:  # as a row from before the column
        connection.execute(update(Instance).where(Instance.blob_key == key).values(crc32=None))
    assert _download(world, tid).content == whole
    assert _kept(world)[key] == zlib.crc32(_blob(world, key))


def test_resumed_ranges_are_the_same_bytes_with_crcs_known_or_not(world: World) -> None:
    studies = [world.studies["one"].study_uid, world.studies["two"].study_uid]
    tid = world.send(studies=studies, send=True).json()["id"]
    length = int(
        world.http.head(
            f"/api/transfers/{tid}/download.zip", headers=world.as_("b-receiver")
        ).headers["content-length"]
    )
    middle = length // 2
    unknown = _download(world, tid, range=f"bytes={middle}-")  # reads earlier blobs' CRCs
    assert set(_kept(world).values()) - {None}  # those read whole are kept
    whole = _download(world, tid)
    etag = whole.headers["etag"]
    assert unknown.content == whole.content[middle:]
    _checked(whole.content)
    for first, last in ((middle, length - 1), (0, 99), (100, middle), (length - 22, length - 1)):
        asked = _download(world, tid, range=f"bytes={first}-{last}", **{"if-range": etag})
        assert asked.status_code == 206
        assert asked.headers["content-range"] == f"bytes {first}-{last}/{length}"
        assert asked.content == whole.content[first : last + 1]
    assert _download(world, tid, range="bytes=-22").content.startswith(b"PK\x05\x06")


def test_a_replaced_blob_has_no_crc_until_read_again(world: World, tmp_path: Path) -> None:
    one = world.studies["one"]
    tid = world.send(send=True).json()["id"]
    before = _download(world, tid)
    stored = world.server.archive.find_instances(one.study_uid)[0]
    assert stored.crc32 is not None
    settings = world.server.settings
    replacing = Archive(world.server.archive.engine, FilesystemBlobStore(settings.blob_dir),
                        replace_duplicates=True)  # fmt: skip
    changed = ct_slice(spec=StudySpec(**{**one.__dict__}), SOPInstanceUID=stored.sop_instance_uid,
                       SeriesInstanceUID=stored.series_instance_uid, InstanceNumber=1)  # fmt: skip
    changed.PatientName = "Changed^Name"
    path = tmp_path / "changed.dcm"
    changed.save_as(path, enforce_file_format=True)
    assert all(o.stored for o in replacing.store_files([path], None, world.pks["A"]))
    [now] = [i for i in world.server.archive.find_instances(one.study_uid)
             if i.sop_instance_uid == stored.sop_instance_uid]  # fmt: skip
    assert now.blob_key != stored.blob_key and now.crc32 is None
    after = _download(world, tid)
    assert after.headers["etag"] != before.headers["etag"]
    members = _checked(after.content)
    assert (zlib.crc32(_blob(world, now.blob_key)), _blob(world, now.blob_key)) in members.values()
    assert _kept(world)[now.blob_key] == zlib.crc32(_blob(world, now.blob_key))


def test_a_blob_changed_behind_the_index_cuts_the_download_short(world: World) -> None:
    tid = world.send(send=True).json()["id"]
    length = len(_download(world, tid).content)  # every CRC known from here on
    key = world.server.archive.find_instances(world.studies["one"].study_uid)[-1].blob_key
    blob = world.server.settings.blob_dir / key
    blob.write_bytes(blob.read_bytes()[:-10])  # never done by Ferry: a key's bytes are for good
    received = bytearray()
    url = f"/api/transfers/{tid}/download.zip"
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the connection ends short of its length
        world.http.stream("GET", url, headers=world.as_("b-receiver")) as answer,
    ):
        assert answer.status_code == 200 and int(answer.headers["content-length"]) == length
        for chunk in answer.iter_raw():
            received += chunk
    assert len(received) < length and b"PK\x05\x06" not in received
    failed = world.audit(transaction=tid, action="download", outcome="failed")
    assert [e.rule for e in failed if "no longer" in (e.reason or "")] == ["stream-failed"]
