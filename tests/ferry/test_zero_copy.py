"""WADO-RS sent from the blobs' files (the ASGI zero-copy send extension of `ferry serve`).

Raw sockets, as in test_connections.py: a reader slower than the server (the socket fills and
the server waits for room), a client that leaves midway, HEAD, and several retrieves on one
connection must each see exactly what the stored files hold, and leave the server as it was.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import httpx
from dicomweb_client.api import DICOMwebClient

from tests import factories
from tests.conftest import RunningServer
from tests.ferry.test_connections import Answer, read_answer, request

ACCEPT = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n'
SLICES = 6  # 768×768 16-bit: about 7 MB in all, several times what a socket buffer holds


def _series(server: RunningServer) -> tuple[str, list[bytes]]:
    """A study of SLICES large instances; the stored bytes of each, in the order sent."""
    first = factories.ct_slice(768, 768, InstanceNumber=1)
    others = [
        factories.ct_slice(
            768,
            768,
            InstanceNumber=number,
            StudyInstanceUID=first.StudyInstanceUID,
            SeriesInstanceUID=first.SeriesInstanceUID,
        )
        for number in range(2, SLICES + 1)
    ]
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([first, *others])
    stored = server.archive.find_instances(first.StudyInstanceUID)
    blobs = [(server.settings.blob_dir / i.blob_key).read_bytes() for i in stored]
    return first.StudyInstanceUID, blobs


def _bodies(answer: Answer) -> list[bytes]:
    boundary = answer.headers["content-type"].split("boundary=")[1].encode()
    parts = answer.body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    bodies = []
    for part in parts[1:-1]:
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom; transfer-syntax=" in head
        bodies.append(body.removesuffix(b"\r\n"))
    return bodies


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))  # the test server runs in this process


def _settled_descriptors(before: int) -> int:
    """Descriptors open once the server has had a moment to close what it should."""
    deadline = time.monotonic() + 10
    while _open_descriptors() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    return _open_descriptors()


def test_a_slow_reader_gets_exactly_the_stored_bytes(server: RunningServer) -> None:
    study, blobs = _series(server)
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        connection.settimeout(30)
        connection.sendall(request(f"/dicom-web/studies/{study}", server, ACCEPT))
        time.sleep(0.5)  # the server fills the socket and waits for room
        answer = read_answer(connection)
    assert answer.status == 200
    assert _bodies(answer) == blobs


def test_several_retrieves_share_one_connection(server: RunningServer) -> None:
    study, blobs = _series(server)
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        for _ in range(3):
            connection.sendall(request(f"/dicom-web/studies/{study}", server, ACCEPT))
            answer = read_answer(connection)
            assert answer.status == 200
            assert _bodies(answer) == blobs
        connection.sendall(request("/healthz", server))
        assert read_answer(connection).body == b'{"status":"up"}'


def test_head_answers_the_length_without_a_body(server: RunningServer) -> None:
    study, blobs = _series(server)
    url = f"{server.dicomweb_url}/studies/{study}"
    headers = {"Accept": ACCEPT.split(": ", 1)[1].strip(), **server.headers}
    with httpx.Client(timeout=30) as client:
        head = client.head(url, headers=headers)
        whole = client.get(url, headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(whole.content)
    assert sum(len(blob) for blob in blobs) < len(whole.content)


def _leave_midway_three_times(server: RunningServer, path: str, accept: str) -> None:
    """Clients that reset the connection while the server waits for room to send `path`; the
    server has closed what it opened for them and still answers."""
    httpx.get(f"{server.base_url}/healthz")  # the server's own descriptors, opened once
    before = _open_descriptors()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            connection.settimeout(30)
            connection.sendall(request(path, server, accept))
            assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.2)  # the server is waiting for room when the client resets
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert _settled_descriptors(before) <= before
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_a_client_that_leaves_midway_leaves_nothing_open(server: RunningServer) -> None:
    study, _ = _series(server)
    _leave_midway_three_times(server, f"/dicom-web/studies/{study}", ACCEPT)


def _read_until_closed(connection: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200 "), lines[0]
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}, body


def test_a_blob_lost_from_a_later_batch_cuts_the_answer_short_and_leaves_nothing_open(
    server: RunningServer,
) -> None:
    study, blobs = _series(server)
    last = server.archive.find_instances(study)[-1]  # opened while the first parts are sent
    (server.settings.blob_dir / last.blob_key).unlink()
    httpx.get(f"{server.base_url}/healthz")  # the server's own descriptors, opened once
    before = _open_descriptors()
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        connection.sendall(request(f"/dicom-web/studies/{study}", server, ACCEPT))
        headers, body = _read_until_closed(connection)  # the server closes: no short "whole"
    assert len(body) < int(headers["content-length"])
    boundary = headers["content-type"].split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)[1:]
    assert len(parts) == SLICES - 1  # every part before the lost blob's, each whole
    for part, blob in zip(parts, blobs, strict=False):
        assert part.removeprefix(b"\r\n").partition(b"\r\n\r\n")[2].removesuffix(b"\r\n") == blob
    assert _settled_descriptors(before) <= before
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def _large_multiframe(server: RunningServer) -> tuple[str, str]:
    """A 40-frame 512×512 16-bit instance (20 MB): the URL of all its frames, and its blob key."""
    ds = factories.mr_multiframe(frames=40, rows=512, columns=512)
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    (stored,) = server.archive.find_instances(ds.StudyInstanceUID)
    path = (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{','.join(str(n) for n in range(1, 41))}"
    )
    return path, stored.blob_key


FRAMES = 'Accept: multipart/related; type="application/octet-stream"\r\n'


def test_frames_to_a_client_that_leaves_midway_leave_nothing_open(server: RunningServer) -> None:
    path, _ = _large_multiframe(server)
    _leave_midway_three_times(server, path, FRAMES)


def test_frames_of_a_blob_lost_from_the_store_are_a_complete_500(server: RunningServer) -> None:
    path, key = _large_multiframe(server)
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        connection.sendall(request(path, server, FRAMES))  # the frames' places, now cached
        assert read_answer(connection).status == 200
    (server.settings.blob_dir / key).unlink()
    with socket.create_connection(("127.0.0.1", server.settings.http_port)) as connection:
        connection.settimeout(30)
        connection.sendall(request(path, server, FRAMES))
        answer = read_answer(connection)
    assert answer.status == 500 and answer.headers["connection"] == "close"
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
