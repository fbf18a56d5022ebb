"""The blob store opens only what lies below its root, whatever a key says."""

from __future__ import annotations

from pathlib import Path

import pytest

from archive.blobstore import FilesystemBlobStore


@pytest.mark.parametrize(
    "key",
    ["", "../outside.dcm", "ab/../../outside.dcm", "ab//../../outside.dcm", "/etc/passwd",
     "//etc/passwd", "ab/\0.dcm"],
)  # fmt: skip
@pytest.mark.parametrize("opening", ["open", "open_unbuffered", "size", "iter_chunks"])
def test_a_key_outside_the_root_is_refused(tmp_path: Path, key: str, opening: str) -> None:
    (tmp_path / "outside.dcm").write_bytes(b"not a blob of the store")
    blobs = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    with pytest.raises(ValueError, match="escapes the store"):
        answer = getattr(blobs, opening)(key)
        next(answer)  # iter_chunks opens on the first chunk


def test_a_stored_blob_opens_by_its_key(tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    spooled = blobs.spool_dir / "incoming"
    spooled.write_bytes(b"part 10 bytes")
    key = blobs.new_key("1.2.3", "1.2.3.4")
    blobs.store([(spooled, key)])
    with blobs.open(key) as blob:
        assert blob.read() == b"part 10 bytes"
    with blobs.open_unbuffered(key) as blob:
        assert blob.read() == b"part 10 bytes"
    assert blobs.size(key) == len(b"part 10 bytes")
