"""The physical reference for a series retrieve: the same bytes, sent as bare as they can be.

A server with no index, no policy and no framework: each series' whole multipart/related answer
(PS3.18 8.6.1.2: a part per instance, as both DICOMweb servers send it) is made once into one file,
and `GET .../studies/{study}/series/{series}` answers with its headers and that file handed to the
kernel in one `socket.sendfile`. curl reading it on loopback shows what this machine's loopback,
page cache and curl allow for those bytes (issue 14: "the physical references in the same run:
... loopback curl MB/s").

Run by the benchmark as a process of its own (`LoopbackFiles`), so its CPU is not the
benchmark's:

    python bench/_loopback.py FOLDER PORT
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from _instances import StudySpec, iter_study_instances
from _servers import LOOPBACK, ManagedServer

SERIES_DIR = "series"  # FOLDER/series/<Series Instance UID>: the answer's body
BOUNDARY = uuid.UUID(int=14).hex  # the same in every answer: the bodies are made before


class LoopbackFiles(ManagedServer):
    """The reference server: each series of `study` answered from one file in its data folder."""

    ready_path = "/ready"
    title = "loopback files"  # its column in the table

    def __init__(self, study: StudySpec, seed: int) -> None:
        super().__init__("reference")
        self.study = study
        self.seed = seed

    def command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        write_series_bodies(data_dir / SERIES_DIR, self.study, self.seed)
        script = Path(__file__).resolve()
        return [sys.executable, str(script), str(data_dir), str(port)], dict(os.environ)

    def read_version(self) -> str | None:
        return "sendfile"


def write_series_bodies(folder: Path, study: StudySpec, seed: int) -> None:
    """Each series of `study` as one multipart/related body of the bytes the servers were sent."""
    places = {sop: series.series_uid for series in study.series for sop in series.sop_uids}
    folder.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, BinaryIO] = {}
    try:
        for sop_uid, blob in iter_study_instances([study], seed):
            series_uid = places[sop_uid]
            body = bodies.get(series_uid)
            if body is None:
                body = bodies[series_uid] = open(folder / series_uid, "wb")  # noqa: SIM115
            else:
                body.write(b"\r\n")
            body.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.write(blob)
    finally:
        for body in bodies.values():
            body.write(f"\r\n--{BOUNDARY}--\r\n".encode())
            body.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    series_root: Path

    def do_GET(self) -> None:
        if self.path == LoopbackFiles.ready_path:
            self._answer(HTTPStatus.OK, b"ready\n")
            return
        body = self._series_body()
        if body is None:
            self._answer(HTTPStatus.NOT_FOUND, b"no such series\n")
            return
        with open(body, "rb") as handle:
            self.send_response(HTTPStatus.OK)
            self.send_header(
                "Content-Type",
                f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            )
            self.send_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            self.end_headers()
            self.wfile.flush()
            self.connection.sendfile(handle)

    def _series_body(self) -> Path | None:
        """The body of `.../studies/{study}/series/{series}`, None for any other path."""
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 4 or parts[-2] != "series" or parts[-4] != "studies":
            return None
        if parts[-1] in ("", ".", ".."):
            return None
        body = self.series_root / parts[-1]
        return body if body.is_file() else None

    def _answer(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a request log would cost the reference time the servers do not spend."""


def serve(folder: Path, port: int, host: str = LOOPBACK) -> None:
    handler = type("SeriesFiles", (_Handler,), {"series_root": folder / SERIES_DIR})
    with ThreadingHTTPServer((host, port), handler) as server:
        server.daemon_threads = True
        server.serve_forever()


def main(argv: Iterable[str]) -> int:
    folder, port = argv
    serve(Path(folder), int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
