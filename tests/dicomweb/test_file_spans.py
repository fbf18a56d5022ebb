"""FileSpansResponse: the same bytes whether the server sends the file's spans itself
(`ferry serve`'s `ferry.file_parts`) or the response reads and streams them (any other ASGI
server): multipart parts of several ranges each, an empty part, a byte range with its 206."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive.blobstore import FilesystemBlobStore
from dicomweb.file_spans import FileSpansResponse, multipart_spans
from dicomweb.multipart import iter_multipart_related, multipart_closing, multipart_length
from tests.conftest import make_settings, read_slowly, run_coroutine, serving

BOUNDARY = "file-spans-test"
PART_TYPE = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
SIZE = 6 * 1024 * 1024 + 13  # several socket buffers
# Parts as (file offset, byte count) ranges: fragments out of order, one part empty, one range
# of a single byte, one running to the file's last byte.
PARTS = [
    [(100, 2 * 1024 * 1024), (5 * 1024 * 1024, 7)],
    [],
    [(0, 1)],
    [(3 * 1024 * 1024, SIZE - 3 * 1024 * 1024)],
]
RANGE = (1234, 4 * 1024 * 1024)  # a single-part answer's byte range: (offset, count)


@pytest.fixture
def blob(tmp_path: Path) -> tuple[FilesystemBlobStore, str, bytes]:
    blobs = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    data = os.urandom(SIZE)
    spooled = blobs.spool_dir / "frames"
    spooled.write_bytes(data)
    key = blobs.new_key("1.2.3", "1.2.3.4")
    blobs.store([(spooled, key)])
    return blobs, key, data


def _expected_multipart(data: bytes) -> bytes:
    bodies = [b"".join(data[o : o + n] for o, n in ranges) for ranges in PARTS]
    return b"".join(iter_multipart_related([(PART_TYPE, [b]) for b in bodies], BOUNDARY))


def _app(blobs: FilesystemBlobStore, key: str) -> Starlette:
    """Routes whose fallback chunks are the bytes read from the file by other code than the
    spans (so that a span sent wrong shows as a difference between the two ways)."""

    def read(ranges: list[tuple[int, int]]) -> Iterator[bytes]:
        with blobs.open(key) as handle:
            for offset, count in ranges:
                handle.seek(offset)
                yield handle.read(count)

    async def frames(_request: Request) -> Response:
        chunks = iter_multipart_related([(PART_TYPE, read(ranges)) for ranges in PARTS], BOUNDARY)
        length = multipart_length([(PART_TYPE, sum(n for _, n in r)) for r in PARTS], BOUNDARY)
        return FileSpansResponse.multipart(
            chunks,
            blobs,
            key,
            BOUNDARY,
            [(PART_TYPE, ranges) for ranges in PARTS],
            media_type=f"multipart/related; boundary={BOUNDARY}",
            headers={"Content-Length": str(length)},
        )

    async def ranged(_request: Request) -> Response:
        offset, count = RANGE
        return FileSpansResponse(
            read([RANGE]),
            blobs,
            key,
            [(b"", offset, count)],
            status_code=206,
            media_type="application/octet-stream",
            headers={"Content-Length": str(count), "Content-Range": f"bytes {offset}-..."},
        )

    async def lost(_request: Request) -> Response:
        return FileSpansResponse(
            read([(0, 1)]),
            blobs,
            "1.2.3/gone.dcm",
            [(b"", 0, 1)],
            media_type="application/octet-stream",
            headers={"Content-Length": "1"},
        )

    return Starlette(
        routes=[Route("/frames", frames), Route("/ranged", ranged), Route("/lost", lost)]
    )


@pytest.fixture(params=["auto", "asyncio"])  # uvloop where installed, and asyncio's own
def served(
    request: pytest.FixtureRequest, tmp_path: Path, blob: tuple[FilesystemBlobStore, str, bytes]
) -> Iterator[str]:
    """The app under `ferry serve`'s uvicorn configuration (`ferry.file_parts` offered)."""
    blobs, key, _ = blob
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    with serving(_app(blobs, key), settings, loop=request.param) as base_url:
        yield base_url


def test_multipart_spans_make_the_multipart_body() -> None:
    data = bytes(range(256)) * (SIZE // 256 + 1)
    spans = multipart_spans(BOUNDARY, [(PART_TYPE, ranges) for ranges in PARTS])
    body = b"".join(prefix + data[o : o + n] for prefix, o, n in spans)
    assert body + multipart_closing(BOUNDARY) == _expected_multipart(data)


def test_spans_sent_from_the_file_by_the_server(
    served: str, blob: tuple[FilesystemBlobStore, str, bytes]
) -> None:
    *_, data = blob
    expected = _expected_multipart(data)
    response, body = read_slowly(f"{served}/frames")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(expected))
    assert body == expected
    ranged = httpx.get(f"{served}/ranged", timeout=30)
    offset, count = RANGE
    assert ranged.status_code == 206
    assert ranged.content == data[offset : offset + count]
    assert httpx.head(f"{served}/frames", timeout=30).content == b""


def test_a_file_gone_from_the_store_is_an_error_before_the_answer_begins(served: str) -> None:
    answer = httpx.get(f"{served}/lost", timeout=30)
    assert answer.status_code == 500
    assert httpx.get(f"{served}/frames", timeout=30).status_code == 200  # still answering


async def _get(app: Starlette, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as client:
        return await client.get(path)


def test_read_and_streamed_where_the_server_offers_no_file_parts(
    blob: tuple[FilesystemBlobStore, str, bytes],
) -> None:
    blobs, key, data = blob
    app = _app(blobs, key)
    response = run_coroutine(lambda: _get(app, "/frames"))
    assert response.status_code == 200
    assert response.content == _expected_multipart(data)
    ranged = run_coroutine(lambda: _get(app, "/ranged"))
    offset, count = RANGE
    assert ranged.status_code == 206 and ranged.content == data[offset : offset + count]
