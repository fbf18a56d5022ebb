"""`ferry serve` as a hospital runs it: the DIMSE bridge and the job worker beside HTTP.

Nodes and a route are made with `ferry admin`; a sending PACS (DCMTK storescu) pushes a study
through the route, and the receiving PACS (DCMTK storescp) gets it from Ferry's own worker, with
no test code in between.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests import factories
from tests._peers import wait_until_dicom_answers
from tests.conftest import free_port
from tests.dimse.conftest import DCMTK_ENV, dcmtk, run_dcmtk
from tests.e2e.test_crash import _environment, _ferry_command, _wait_until_up

pytestmark = pytest.mark.slow

WAIT = 30.0


def _ferry(data_dir: Path, *arguments: str) -> str:
    environment = _environment(data_dir, 0)
    done = subprocess.run(
        [*_ferry_command(), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _transfers(data_dir: Path) -> str:
    return _ferry(data_dir, "admin", "transfers")


def _delivered(data_dir: Path) -> bool:
    """Whether the index says a transfer is delivered: what the test waits for before asking
    `ferry admin transfers`, read straight from the file (a `ferry` process a poll would cost
    seconds of start-up on a busy machine)."""
    with sqlite3.connect(f"file:{data_dir / 'ferry.db'}?mode=ro", uri=True) as connection:
        found = connection.execute("SELECT 1 FROM transfer WHERE status = 'delivered'").fetchone()
    return found is not None


def test_a_study_pushed_through_a_route_reaches_the_other_pacs(tmp_path: Path) -> None:
    data_dir = tmp_path / "ferry"
    data_dir.mkdir()
    received = tmp_path / "stmary-pacs"
    received.mkdir()
    pacs_port, dicom_port, http_port = free_port(), free_port(), free_port()
    _ferry(data_dir, "admin", "create-institution", "HOSP", "Hospital")
    _ferry(data_dir, "admin", "create-institution", "STMARY", "St Mary's")
    _ferry(data_dir, "admin", "add-node", "--institution", "HOSP", "--ae-title", "PACS_HOSP",
           "--host", "127.0.0.1", "--port", "104", "--write", "--query")  # fmt: skip
    pacs = ("--host", "127.0.0.1", "--port", str(pacs_port), "--write", "--unrestricted")
    _ferry(data_dir, "admin", "add-node", "--institution", "STMARY", "--ae-title", "PACS_STMARY",
           *pacs)  # fmt: skip
    _ferry(data_dir, "admin", "add-route", "--ae-title", "FERRY_TO_STMARY", "--to", "STMARY",
           "--node", "PACS_STMARY", "--quiet-seconds", "1")  # fmt: skip
    assert "FERRY_TO_STMARY" in _ferry(data_dir, "admin", "routes")

    study = tmp_path / "study"
    study.mkdir()
    spec = factories.StudySpec()
    uids = set()
    for number in range(1, 4):
        instance = factories.ct_slice(spec=replace(spec, instance_number=number))
        instance.save_as(study / f"{number}.dcm", enforce_file_format=True)
        uids.add(instance.SOPInstanceUID)

    environment = _environment(data_dir, http_port) | {"FERRY_DICOM_PORT": str(dicom_port)}
    log = tmp_path / "serve.log"
    storescp = subprocess.Popen(
        [dcmtk("storescp"), "-od", str(received), str(pacs_port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with log.open("ab") as output:
        serve = subprocess.Popen(
            [*_ferry_command(), "serve"],
            env=environment,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(serve, f"http://127.0.0.1:{http_port}", log)
        wait_until_dicom_answers(pacs_port, storescp)
        wait_until_dicom_answers(dicom_port, serve, ae_title="FERRY")
        refused = run_dcmtk("echoscu", "-aet", "STRANGER", "-aec", "FERRY", "127.0.0.1",
                            str(dicom_port))  # fmt: skip
        assert refused.returncode != 0  # an unknown calling AE is rejected
        sent = run_dcmtk("storescu", "-aet", "PACS_HOSP", "-aec", "FERRY_TO_STMARY", "+sd",
                         "127.0.0.1", str(dicom_port), str(study))  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and len(list(received.iterdir())) < len(uids):
            time.sleep(0.05)
        arrived = {dcmread(path).SOPInstanceUID for path in received.iterdir()}
        assert arrived == uids, log.read_text()
        while time.monotonic() < deadline and not _delivered(data_dir):
            time.sleep(0.05)
        assert "delivered" in _transfers(data_dir)
    finally:
        for process in (serve, storescp):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _socket_holders(pids: list[int]) -> dict[str, int]:
    """Socket inode -> the process holding it, as `ss -tnp` shows a socket's process."""
    holders = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        holders[target[8:-1]] = pid
    return holders


def _accepted_by(serve: int, dicom_port: int, scu_port: int) -> int:
    """The process of `ferry serve`'s tree holding the accepted end of the SCU's connection."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if local.endswith(f":{dicom_port:04X}") and remote.endswith(f":{scu_port:04X}"):
                holder = _socket_holders([serve, *_children(serve)]).get(inode)
                if holder is not None:
                    return holder
        time.sleep(0.05)
    pytest.fail(f"no process of ferry serve holds the association from port {scu_port}")


def _command_name(pid: int) -> str:
    return (Path("/proc") / str(pid) / "comm").read_text().strip()


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _state(pid) not in ("Z", "gone")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_two_bridge_processes_take_associations_and_end_with_serve(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """FERRY_DICOM_PROCESSES=2: `ferry serve` and a forked bridge (`ferry-dimse-1` in `ps`)
    share the port and take turns, the one holding fewer associations first, and store on
    them; however `ferry serve` ends, the bridge ends."""
    data_dir = tmp_path / "ferry"
    data_dir.mkdir()
    _ferry(data_dir, "admin", "create-institution", "HOSP", "Hospital")
    _ferry(data_dir, "admin", "add-node", "--institution", "HOSP", "--ae-title", "MODALITY",
           "--host", "127.0.0.1", "--port", "104", "--write")  # fmt: skip
    dicom_port, http_port = free_port(), free_port()
    environment = _environment(data_dir, http_port) | {
        "FERRY_DICOM_PORT": str(dicom_port),
        "FERRY_DICOM_PROCESSES": "2",
        "FERRY_HTTP_WORKERS": "1",  # the one child is the second bridge
    }
    log = tmp_path / "serve.log"
    with log.open("ab") as output:
        serve = subprocess.Popen(
            [*_ferry_command(), "serve"], env=environment, cwd=tmp_path, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    held = []
    try:
        _wait_until_up(serve, f"http://127.0.0.1:{http_port}", log)
        deadline = time.monotonic() + WAIT
        while not _children(serve.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        [bridge] = _children(serve.pid)
        assert _command_name(bridge) == "ferry-dimse-1"
        assert _listeners(dicom_port) == 1  # bound once by `ferry serve`, shared by both
        accepted_by: Counter[int] = Counter()
        spec = factories.StudySpec()
        # Each association is held open while the next is made: the bridge holding fewer
        # takes the next one, so four are spread two and two.
        for number in range(1, 5):
            assoc = ae.associate("127.0.0.1", dicom_port, ae_title="FERRY")
            assert assoc.is_established
            held.append(assoc)
            scu_port = assoc.dul.socket.socket.getsockname()[1]
            accepted_by[_accepted_by(serve.pid, dicom_port, scu_port)] += 1
            instance = factories.ct_slice(spec=replace(spec, instance_number=number))
            status = assoc.send_c_store(instance)
            assert status.Status == 0x0000  # stored by the process that accepted it
        assert accepted_by == {serve.pid: 2, bridge: 2}
        for assoc in held:
            assoc.release()
        held.clear()

        serve.send_signal(stop)
        serve.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while (_alive(bridge) or _listeners(dicom_port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(bridge)
        assert _listeners(dicom_port) == 0  # nothing takes associations any more
    finally:
        for assoc in held:
            assoc.abort()
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def _listeners(port: int) -> int:
    """Sockets listening on the port (/proc/net/tcp: state 0A), whichever process holds them."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            count += 1
    return count


def _state(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
