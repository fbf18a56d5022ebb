"""Crash safety: a SIGKILLed server keeps every instance it acknowledged (PS3.18 10.5.3).

A real `ferry serve` takes STOW-RS requests from two clients, one of them stalled halfway
through its body, and is killed with SIGKILL. Restarted on the same data folder it must
still serve what it acknowledged, byte for byte, and `ferry archive check` may find only
what an interrupted store leaves: orphan blobs and left-over incoming files. The clients
authenticate with an API token made by `ferry admin create-api-client`, as a gateway would.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from tests import factories
from tests._peers import READY_WAIT
from tests.conftest import free_port

pytestmark = pytest.mark.slow

INSTANCES_PER_REQUEST = 20
STEADY_REQUESTS = 6
BOUNDARY = "ferry-crash-test"
DICOM_PARTS = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
WAIT = 20.0  # seconds for anything that should take well under one


def _ferry_command() -> list[str]:
    script = Path(sys.executable).parent / "ferry"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ferry.cli"]


def _environment(data_dir: Path, port: int) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment.update(
        FERRY_DATA_DIR=str(data_dir),
        FERRY_DATABASE_URL=f"sqlite:///{data_dir / 'ferry.db'}",
        FERRY_HTTP_HOST="127.0.0.1",
        FERRY_HTTP_PORT=str(port),
        FERRY_PUBLIC_URL=f"http://127.0.0.1:{port}",
        FERRY_LOG_LEVEL="warning",
        FERRY_DICOM_PORT="0",  # this test is about HTTP; no DIMSE port to collide on
    )
    return environment


@contextmanager
def ferry_serve(data_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`ferry serve` on a free port; killed on the way out whatever happened."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*_ferry_command(), "serve"],
            env=_environment(data_dir, port),
            cwd=data_dir.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(process, base, log)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


def _wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_WAIT  # start-up of every process on a busy machine
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ferry serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"ferry serve did not answer within {WAIT} s:\n{log.read_text()}")


def ferry(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_ferry_command(), *arguments],
        env=_environment(data_dir, free_port()),
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ferry_archive_check(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return ferry(data_dir, "archive", "check", *options)


def api_client_headers(data_dir: Path) -> dict[str, str]:
    """An institution and an API client that stores and reads back, made with `ferry admin`."""
    made = ferry(data_dir, "admin", "create-institution", "CRASH", "Crash test hospital")
    assert made.returncode == 0, made.stdout + made.stderr
    client = ferry(
        data_dir,
        "admin",
        "create-api-client",
        "crash-uploader",
        "--institution",
        "CRASH",
        "--roles",
        "sender,receiver,viewer",
        "--scopes",
        "read,write,download",
    )
    assert client.returncode == 0, client.stdout + client.stderr
    (token,) = client.stdout.split()
    return {"Authorization": f"Bearer {token}"}


# -- the clients ------------------------------------------------------------------------------


def _multipart(files: list[bytes]) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in files
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _batch(spec: factories.StudySpec, first_number: int) -> dict[str, bytes]:
    """SOP Instance UID -> PS3.10 bytes of 256×256 CT slices."""
    batch = {}
    for number in range(first_number, first_number + INSTANCES_PER_REQUEST):
        ds: Dataset = factories.ct_slice(256, 256, spec=replace(spec, instance_number=number))
        batch[ds.SOPInstanceUID] = factories.part10_bytes(ds)
    return batch


@dataclass
class Uploads:
    """What the clients sent, and what the server said it stored."""

    sent: dict[str, bytes] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    completed_requests: int = 0
    errors: list[str] = field(default_factory=list)


def steady_client(
    base: str, auth: dict[str, str], batches: list[dict[str, bytes]], uploads: Uploads
) -> None:
    """One request after another, as a modality sending a large study does."""
    with httpx.Client(headers=auth, timeout=WAIT) as web:
        for batch in batches:
            uploads.sent.update(batch)
            try:
                response = web.post(
                    f"{base}/dicom-web/studies",
                    content=_multipart(list(batch.values())),
                    headers={"Content-Type": DICOM_PARTS},
                )
            except httpx.TransportError as error:  # the server was killed
                uploads.errors.append(repr(error))
                return
            if response.status_code == 200:
                for item in response.json()[REFERENCED_SOP_SEQUENCE]["Value"]:
                    uploads.acknowledged.add(item[REFERENCED_SOP_INSTANCE_UID]["Value"][0])
            uploads.completed_requests += 1


def stalled_client(
    base: str,
    auth: dict[str, str],
    batch: dict[str, bytes],
    stalled: threading.Event,
    killed: threading.Event,
) -> None:
    """Sends most of a chunked body, then waits until the server is gone."""
    body = _multipart(list(batch.values()))
    pause_at = len(body) * 9 // 10

    def chunks() -> Iterator[bytes]:
        for start in range(0, pause_at, 256 * 1024):
            yield body[start : min(start + 256 * 1024, pause_at)]
        stalled.set()
        killed.wait(WAIT)
        yield body[pause_at:]

    try:
        httpx.post(
            f"{base}/dicom-web/studies",
            content=chunks(),
            headers={"Content-Type": DICOM_PARTS, **auth},
            timeout=WAIT,
        )
    except httpx.TransportError:
        pass
    finally:
        stalled.set()


def _spooling(data_dir: Path, batch: dict[str, bytes]) -> bool:
    """Whether a file being received holds one of `batch`'s instances (its UID is near the
    start of the data set)."""
    uids = [uid.encode() for uid in batch]
    incoming = data_dir / "blobs" / ".incoming"
    for path in incoming.iterdir() if incoming.is_dir() else ():
        try:
            with path.open("rb") as spooled:
                head = spooled.read(8192)
        except OSError:  # stored (renamed) meanwhile
            continue
        if any(uid in head for uid in uids):
            return True
    return False


def _wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- reading back -------------------------------------------------------------------------------


def only_part(response: httpx.Response) -> bytes:
    """The body of the single part of a multipart/related response."""
    found = re.search(r'boundary="?([^";]+)"?', response.headers["Content-Type"])
    assert found, response.headers["Content-Type"]
    delimiter = b"--" + found.group(1).encode()
    body = response.content
    start = body.index(b"\r\n\r\n", body.index(delimiter + b"\r\n")) + 4
    end = body.rindex(b"\r\n" + delimiter + b"--")
    return body[start:end]


def indexed_blob_keys(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{data_dir / 'ferry.db'}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT sop_instance_uid, blob_key FROM instance").fetchall()
    return dict(rows)


def kill_during_uploads(
    data_dir: Path, log: Path, spec: factories.StudySpec, auth: dict[str, str]
) -> Uploads:
    """Two clients upload; SIGKILL once one is stalled mid-body and the other has 2 answers."""
    steady_batches = [_batch(spec, 1 + n * INSTANCES_PER_REQUEST) for n in range(STEADY_REQUESTS)]
    stalled_batch = _batch(spec.new_series(2), 1) | _batch(spec.new_series(3), 1)
    uploads = Uploads()
    stalled, killed = threading.Event(), threading.Event()
    with ferry_serve(data_dir, log) as (process, base):
        clients = [
            threading.Thread(target=steady_client, args=(base, auth, steady_batches, uploads)),
            threading.Thread(
                target=stalled_client, args=(base, auth, stalled_batch, stalled, killed)
            ),
        ]
        for client in clients:
            client.daemon = True
            client.start()
        try:
            _wait_for(stalled.is_set, "the stalled upload")
            _wait_for(lambda: uploads.completed_requests >= 2, "two answered requests")
            # The client's last bytes left it; the server has them once it spools that upload.
            _wait_for(lambda: _spooling(data_dir, stalled_batch), "the stalled upload's spooling")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
        finally:
            killed.set()
            for client in clients:
                client.join(timeout=WAIT)
    assert not any(client.is_alive() for client in clients)
    return uploads


def assert_acknowledged_are_served(web: httpx.Client, base: str, uploads: Uploads) -> None:
    """WADO-RS returns every acknowledged instance exactly as it was sent."""
    for uid in sorted(uploads.acknowledged):
        found = web.get(f"{base}/dicom-web/instances", params={"SOPInstanceUID": uid})
        [document] = found.json()
        response = web.get(
            document["00081190"]["Value"][0],
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200, uid
        assert only_part(response) == uploads.sent[uid], f"{uid} changed"


def assert_index_matches_blobs(web: httpx.Client, base: str, data_dir: Path) -> dict[str, str]:
    """QIDO-RS sees every index row, and every index row has its blob."""
    indexed = indexed_blob_keys(data_dir)
    searched = web.get(f"{base}/dicom-web/instances", params={"limit": "1000"}).json()
    assert len(searched) == len(indexed)
    missing = [key for key in indexed.values() if not (data_dir / "blobs" / key).is_file()]
    assert missing == []
    return indexed


def assert_check_finds_only_leftovers(data_dir: Path, left_over: list[str]) -> None:
    check = ferry_archive_check(data_dir)
    findings = check.stdout.splitlines()
    assert findings[-1] == "archive has findings", check.stdout + check.stderr
    assert check.returncode == 1
    for line in findings[:-1]:
        assert line.startswith(("orphan blob (no index row): ", "left-over incoming file: ")), line
    assert {f"left-over incoming file: {name}" for name in left_over} <= set(findings)


def assert_repair_makes_consistent(data_dir: Path) -> None:
    repair = ferry_archive_check(data_dir, "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    for line in repair.stdout.splitlines()[:-1]:
        assert line.startswith(("orphan blob", "left-over incoming file")), line
        assert " - removed: " in line, line
    assert list((data_dir / "blobs" / ".incoming").iterdir()) == []
    again = ferry_archive_check(data_dir)
    assert (again.returncode, again.stdout.splitlines()) == (0, ["archive consistent"])


def test_acknowledged_instances_survive_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    log = tmp_path / "ferry.log"
    spec = factories.StudySpec()
    auth = api_client_headers(data_dir)
    uploads = kill_during_uploads(data_dir, log, spec, auth)
    assert uploads.acknowledged, "no request was acknowledged before the kill"
    left_over = sorted(p.name for p in (data_dir / "blobs" / ".incoming").iterdir())
    assert left_over, "the kill did not interrupt the stalled upload's spooling"

    with (
        ferry_serve(data_dir, log) as (_process, base),
        httpx.Client(headers=auth, timeout=WAIT) as web,
    ):
        assert_acknowledged_are_served(web, base, uploads)
        indexed = assert_index_matches_blobs(web, base, data_dir)
        assert uploads.acknowledged <= set(indexed) <= set(uploads.sent)
        one_more = factories.ct_slice(spec=spec.new_series(4))
        stored = web.post(
            f"{base}/dicom-web/studies",
            content=_multipart([factories.part10_bytes(one_more)]),
            headers={"Content-Type": DICOM_PARTS},
        )
        assert stored.status_code == 200

    assert_check_finds_only_leftovers(data_dir, left_over)
    assert_repair_makes_consistent(data_dir)
    assert set(indexed_blob_keys(data_dir)) >= uploads.acknowledged | {one_more.SOPInstanceUID}
