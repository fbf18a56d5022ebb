"""StoredPartsResponse: the same multipart/related bytes whether the server sends the files
itself (`ferry serve`'s zero-copy send) or the response reads and streams them (any other
ASGI server)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from archive.blobstore import FilesystemBlobStore
from dicomweb.file_spans import FILE_PARTS
from dicomweb.multipart import iter_multipart_related
from dicomweb.stored_parts import StoredPart, StoredPartsResponse
from tests.conftest import make_settings, read_slowly, run_coroutine, serving

BOUNDARY = "stored-parts-test"
PART_TYPE = "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
SIZES = (3 * 1024 * 1024 + 7, 1, 40_000, 2 * 1024 * 1024)  # larger than a piece, and tiny


@pytest.fixture
def stored(tmp_path: Path) -> tuple[FilesystemBlobStore, list[StoredPart], bytes]:
    """Blobs of SIZES in a real store; the parts naming them; the body they must make."""
    blobs = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    parts, contents, moves = [], [], []
    for number, size in enumerate(SIZES):
        data = os.urandom(size)
        spooled = blobs.spool_dir / f"part-{number}"
        spooled.write_bytes(data)
        key = blobs.new_key("1.2.3", f"1.2.3.{number}")
        moves.append((spooled, key))
        parts.append(StoredPart(PART_TYPE, key, size))
        contents.append(data)
    blobs.store(moves)
    expected = b"".join(iter_multipart_related([(PART_TYPE, [c]) for c in contents], BOUNDARY))
    return blobs, parts, expected


class _ChunkedFileParts(Response):
    """One `ferry.file_parts` message without a Content-Length: a span of a file with no
    descriptor (in memory) and a span of a stored blob; the server reads and sends both."""

    def __init__(self, blobs: FilesystemBlobStore, part: StoredPart) -> None:
        super().__init__()
        self.blobs, self.part = blobs, part

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert FILE_PARTS in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with self.blobs.open_unbuffered(self.part.key) as blob:
            spans = [(b"first:", io.BytesIO(b"0123456789"), 2, 5), (b"|second:", blob, 1, 9)]
            await send({"type": FILE_PARTS, "parts": spans, "more_body": False})


def _app(blobs: FilesystemBlobStore, parts: list[StoredPart]) -> Starlette:
    async def retrieve(_request: Request) -> Response:
        return StoredPartsResponse(blobs, parts, BOUNDARY)

    async def chunked(_request: Request) -> Response:
        return _ChunkedFileParts(blobs, parts[0])

    return Starlette(routes=[Route("/parts", retrieve), Route("/chunked", chunked)])


@pytest.fixture(params=["auto", "asyncio"])  # uvloop where installed, and asyncio's own
def served(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stored: tuple[FilesystemBlobStore, list[StoredPart], bytes],
) -> Iterator[str]:
    """The app under `ferry serve`'s uvicorn configuration (zero-copy send offered)."""
    blobs, parts, _ = stored
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    with serving(_app(blobs, parts), settings, loop=request.param) as base_url:
        yield f"{base_url}/parts"


def test_sent_from_the_files_by_the_server(
    served: str, stored: tuple[FilesystemBlobStore, list[StoredPart], bytes]
) -> None:
    *_, expected = stored
    response, body = read_slowly(served, pause_s=0.01)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(expected))
    assert response.headers["content-type"] == (
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    )
    assert body == expected


def test_spans_without_a_length_or_a_descriptor_are_read_and_sent_chunked(
    served: str, stored: tuple[FilesystemBlobStore, list[StoredPart], bytes]
) -> None:
    blobs, parts, _ = stored
    with blobs.open(parts[0].key) as blob:
        blob_bytes = blob.read(10)
    answer = httpx.get(served.removesuffix("/parts") + "/chunked", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.content == b"first:23456|second:" + blob_bytes[1:10]


async def _get(app: Starlette) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as client:
        return await client.get("/parts")


def test_read_and_streamed_where_the_server_offers_no_zero_copy(
    stored: tuple[FilesystemBlobStore, list[StoredPart], bytes],
) -> None:
    blobs, parts, expected = stored
    app = _app(blobs, parts)
    response = run_coroutine(lambda: _get(app))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(expected))
    assert response.content == expected
