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
