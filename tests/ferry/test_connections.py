"""HTTP connections: honest about closing after an error, safe from slow and oversized heads.

Raw sockets, because what matters here is what a client sees on the wire: whether a response
is complete, whether it says `Connection: close` before the server closes, and whether a
connection that dribbles its headers is ended (RFC 9110 9.6, 15.5.9; RFC 6585 section 5).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archive.store import Archive
from ferry.settings import Settings
from tests import factories
from tests.conftest import RunningServer, run_server

SLOW_CLIENTS = 50


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(connection: socket.socket) -> Answer:
    """One HTTP/1.1 response with a Content-Length, read exactly (no more)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before a complete head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "connection closed before the body was complete"
        body += chunk
    assert len(body) == length
    return Answer(int(lines[0].split()[1]), headers, body)


def request(path: str, server: RunningServer, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\n{extra}\r\n"
    ).encode()


def closed_by_server(connection: socket.socket) -> bool:
    """True when the server ended the connection cleanly (FIN, no reset) with nothing more."""
    connection.settimeout(30)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return False


async def _unexpected(_request: Request) -> Response:
    raise RuntimeError("a bug Ferry did not foresee")


@pytest.fixture
def buggy_server(server: RunningServer) -> RunningServer:
    """The real service with one more route that fails as a bug would."""
    server.app.router.routes.append(Route("/bug", _unexpected))
    return server


def test_an_unexpected_error_answers_500_and_says_the_connection_closes(
    buggy_server: RunningServer,
) -> None:
    with socket.create_connection(("127.0.0.1", buggy_server.settings.http_port)) as connection:
        connection.settimeout(30)
        connection.sendall(request("/healthz", buggy_server))
        assert read_answer(connection).status == 200
        connection.sendall(request("/bug", buggy_server))
        answer = read_answer(connection)
        assert answer.status == 500
        assert answer.headers["connection"] == "close"
        assert b"logged" in answer.body
        assert closed_by_server(connection)
    assert httpx.get(f"{buggy_server.base_url}/healthz").status_code == 200


def test_a_refusal_keeps_the_connection_usable(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        missing = f"/dicom-web/studies/1.2.3.{server.institution_pk}/metadata"
        for _ in range(3):
            connection.sendall(request(missing, server))
            answer = read_answer(connection)
            assert answer.status == 404
            assert answer.headers.get("connection", "keep-alive") != "close"
        connection.sendall(request("/healthz", server))
        assert read_answer(connection).status == 200


@pytest.fixture
def strict_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    """Two seconds to send the headers, at most 8 KiB of them."""
    changed = dataclasses.replace(settings, http_header_timeout=2, http_max_header_bytes=8192)
    yield from run_server(changed, archive)


def test_slow_headers_are_cut_off_while_others_are_served(strict_server: RunningServer) -> None:
    port = strict_server.settings.http_port
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(SLOW_CLIENTS)]
    try:
        for connection in slow:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        with httpx.Client(base_url=strict_server.base_url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
        for connection in slow:
            connection.settimeout(30)
            answer = read_answer(connection)
            assert answer.status == 408
            assert answer.headers["connection"] == "close"
            assert closed_by_server(connection)
    finally:
        for connection in slow:
            connection.close()


def test_an_idle_connection_is_closed_without_an_answer(strict_server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.settings.http_port)) as connection:
        assert closed_by_server(connection)


def test_oversized_headers_answer_431(strict_server: RunningServer) -> None:
    big = "a" * 1024 * 1024
    response = httpx.get(f"{strict_server.base_url}/healthz", headers={"X-Big": big}, timeout=30)
    assert response.status_code == 431
    many = {f"X-Header-{n}": "v" * 100 for n in range(200)}
    response = httpx.get(f"{strict_server.base_url}/healthz", headers=many, timeout=30)
    assert response.status_code == 431
    with socket.create_connection(("127.0.0.1", strict_server.settings.http_port)) as connection:
        connection.settimeout(30)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(10):  # a header that never ends: refused before it does
            connection.sendall(b"b" * 65536)
        answer = read_answer(connection)
        assert answer.status == 431
        assert closed_by_server(connection)
    ordinary = httpx.get(f"{strict_server.base_url}/healthz", headers={"X-Fine": "c" * 4000})
    assert ordinary.status_code == 200


def _two_slice_study(server: RunningServer) -> tuple[str, list[str]]:
    """A study of two instances, each larger than the first piece WADO-RS sends (1 MiB);
    their blob keys in the order WADO-RS sends them."""
    first = factories.ct_slice(768, 768, InstanceNumber=1)
    second = factories.ct_slice(
        768,
        768,
        InstanceNumber=2,
        StudyInstanceUID=first.StudyInstanceUID,
        SeriesInstanceUID=first.SeriesInstanceUID,
    )
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([first, second])
    stored = server.archive.find_instances(first.StudyInstanceUID)
    return first.StudyInstanceUID, [instance.blob_key for instance in stored]


def _lose_blob(server: RunningServer, key: str) -> None:
    (server.settings.blob_dir / key).unlink()


def test_a_stream_that_cannot_begin_is_a_complete_500(server: RunningServer) -> None:
    study, keys = _two_slice_study(server)
    _lose_blob(server, keys[0])
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        accept = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n'
        connection.sendall(request(f"/dicom-web/studies/{study}", server, accept))
        answer = read_answer(connection)
        assert answer.status == 500
        assert answer.headers["connection"] == "close"
        assert closed_by_server(connection)


def test_a_stream_that_fails_midway_is_visibly_cut_short(server: RunningServer) -> None:
    study, keys = _two_slice_study(server)
    _lose_blob(server, keys[1])
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with pytest.raises(httpx.RemoteProtocolError):  # never a short body that looks whole
        httpx.get(
            f"{server.dicomweb_url}/studies/{study}",
            headers={"Accept": accept, **server.headers},
            timeout=30,
        )
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
