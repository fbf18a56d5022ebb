"""Crash safety over DIMSE: a SIGKILLed bridge keeps every instance it acknowledged (PS3.4 B.2.3).

A modality (a pynetdicom SCU) sends CT slices one C-STORE after another into a real `ferry
serve`, which is killed with SIGKILL once it has answered twenty of them with Success, most
likely while the next one is on the wire. Restarted on the same data folder, Ferry must find
every acknowledged instance by QIDO-RS and serve it byte for byte as sent; `ferry archive check`
may find only what an interrupted store leaves (orphan blobs, left-over incoming files), and
`--repair` makes the archive consistent.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests import factories
from tests._peers import wait_until_dicom_answers
from tests.conftest import free_port
from tests.dimse.test_store import _data_set_bytes
from tests.e2e.test_crash import (
    WAIT,
    _environment,
    _ferry_command,
    _wait_for,
    _wait_until_up,
    api_client_headers,
    assert_check_finds_only_leftovers,
    assert_repair_makes_consistent,
    ferry,
    indexed_blob_keys,
    only_part,
)

pytestmark = pytest.mark.slow

ACKNOWLEDGED_BEFORE_KILL = 20
SENT_AT_MOST = 200
MODALITY = "CT_SCANNER"


@dataclass
class Sent:
    """What the modality sent, and what Ferry answered Success to."""

    sent: dict[str, bytes] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def ferry_serve_dimse(
    data_dir: Path, log: Path, dicom_port: int
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`ferry serve` with its DIMSE bridge in the same process (one bridge: the one killed)."""
    http_port = free_port()
    environment = _environment(data_dir, http_port) | {
        "FERRY_DICOM_PORT": str(dicom_port),
        "FERRY_DICOM_PROCESSES": "1",
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*_ferry_command(), "serve"],
            env=environment,
            cwd=data_dir.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        _wait_until_up(process, base, log)
        wait_until_dicom_answers(dicom_port, process, ae_title="FERRY")
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


def modality(port: int, spec: factories.StudySpec, sent: Sent, stop: threading.Event) -> None:
    """One association, one C-STORE after another, until the connection goes or `stop`."""
    ae = AE(MODALITY)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
    assoc = ae.associate("127.0.0.1", port, ae_title="FERRY")
    if not assoc.is_established:
        sent.errors.append("association not established")
        return
    try:
        for number in range(1, SENT_AT_MOST + 1):
            if stop.is_set() or not assoc.is_established:
                return
            ds = factories.ct_slice(256, 256, spec=replace(spec, instance_number=number))
            sent.sent[str(ds.SOPInstanceUID)] = factories.part10_bytes(ds)
            status = assoc.send_c_store(ds)
            if status.get("Status") == 0x0000:
                sent.acknowledged.add(str(ds.SOPInstanceUID))
    except Exception as error:  # the bridge was killed under the send
        sent.errors.append(repr(error))
    finally:
        with contextlib.suppress(Exception):
            assoc.abort()


def assert_acknowledged_are_searchable(web: httpx.Client, base: str, sent: Sent) -> None:
    """QIDO-RS finds every acknowledged instance; WADO-RS serves its data set as it was sent
    (Ferry puts its own File Meta Information in front)."""
    for uid in sorted(sent.acknowledged):
        found = web.get(f"{base}/dicom-web/instances", params={"SOPInstanceUID": uid})
        assert found.status_code == 200, uid
        [document] = found.json()
        response = web.get(
            document["00081190"]["Value"][0],
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200, uid
        assert _data_set_bytes(only_part(response)) == _data_set_bytes(sent.sent[uid]), uid


def test_acknowledged_c_stores_survive_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    log = tmp_path / "ferry.log"
    auth = api_client_headers(data_dir)
    added = ferry(data_dir, "admin", "add-node", "--institution", "CRASH", "--ae-title", MODALITY,
                  "--host", "127.0.0.1", "--port", "104", "--write")  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    spec = factories.StudySpec()
    sent, stop = Sent(), threading.Event()
    dicom_port = free_port()
    with ferry_serve_dimse(data_dir, log, dicom_port) as (process, _base):
        sender = threading.Thread(target=modality, args=(dicom_port, spec, sent, stop))
        sender.daemon = True
        sender.start()
        try:
            _wait_for(lambda: len(sent.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL, "20 C-STOREs")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
        finally:
            stop.set()
            # Longer than the modality's own DIMSE timeout (WAIT), which may be what ends it.
            sender.join(timeout=3 * WAIT)
    assert not sender.is_alive()
    assert len(sent.acknowledged) >= ACKNOWLEDGED_BEFORE_KILL, sent.errors

    with (
        ferry_serve_dimse(data_dir, log, free_port()) as (_process, base),
        httpx.Client(headers=auth, timeout=WAIT) as web,
    ):
        assert_acknowledged_are_searchable(web, base, sent)
        indexed = indexed_blob_keys(data_dir)
        assert sent.acknowledged <= set(indexed) <= set(sent.sent)
        missing = [key for key in indexed.values() if not (data_dir / "blobs" / key).is_file()]
        assert missing == []

    check = ferry(data_dir, "archive", "check")
    if check.returncode != 0:  # the kill interrupted a store: only its leftovers are found
        assert_check_finds_only_leftovers(data_dir, [])
    assert_repair_makes_consistent(data_dir)
    assert set(indexed_blob_keys(data_dir)) >= sent.acknowledged
