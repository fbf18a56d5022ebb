"""`ferry serve` as a hospital runs it: the DIMSE bridge and the job worker beside HTTP.

Nodes and a route are made with `ferry admin`; a sending PACS (DCMTK storescu) pushes a study
through the route, and the receiving PACS (DCMTK storescp) gets it from Ferry's own worker, with
no test code in between.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread

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
            time.sleep(0.2)
        arrived = {dcmread(path).SOPInstanceUID for path in received.iterdir()}
        assert arrived == uids, log.read_text()
        while time.monotonic() < deadline and "delivered" not in _transfers(data_dir):
            time.sleep(0.2)
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


def _cpu_ticks(pid: int) -> int:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_two_bridge_processes_share_the_port(tmp_path: Path) -> None:
    """FERRY_DICOM_PROCESSES=2: a second bridge takes associations, and ends with `ferry serve`."""
    data_dir = tmp_path / "ferry"
    data_dir.mkdir()
    _ferry(data_dir, "admin", "create-institution", "HOSP", "Hospital")
    _ferry(data_dir, "admin", "add-node", "--institution", "HOSP", "--ae-title", "MODALITY",
           "--host", "127.0.0.1", "--port", "104", "--write")  # fmt: skip
    folders = []
    for number in range(16):
        folder = tmp_path / f"study{number}"
        folder.mkdir()
        factories.write_series(folder, 1, spec=factories.StudySpec())
        folders.append(folder)
    dicom_port, http_port = free_port(), free_port()
    environment = _environment(data_dir, http_port) | {
        "FERRY_DICOM_PORT": str(dicom_port),
        "FERRY_DICOM_PROCESSES": "2",
        "FERRY_HTTP_WORKERS": "1",  # the one child to find is the second bridge
    }
    log = tmp_path / "serve.log"
    with log.open("ab") as output:
        serve = subprocess.Popen(
            [*_ferry_command(), "serve"], env=environment, cwd=tmp_path, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_up(serve, f"http://127.0.0.1:{http_port}", log)
        deadline = time.monotonic() + WAIT
        while not _children(serve.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        [second] = _children(serve.pid)
        while _listeners(dicom_port) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _listeners(dicom_port) == 2
        idle = _cpu_ticks(second)
        for folder in folders:  # sixteen associations, spread by the kernel over both
            sent = run_dcmtk("storescu", "-aet", "MODALITY", "-aec", "FERRY", "+sd",
                             "127.0.0.1", str(dicom_port), str(folder))  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        assert _cpu_ticks(second) > idle  # it stored some of them
        serve.terminate()
        serve.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while Path(f"/proc/{second}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{second}").exists() or "Z" in _state(second)
    finally:
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
