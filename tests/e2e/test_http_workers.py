"""`ferry serve` answers HTTP from several processes on one port (`FERRY_HTTP_WORKERS`).

Every uvicorn log line names its process, so the access lines show which process answered
each request; an API token made once works whichever process answers, connections held open are
shared out evenly (`ferry.http_workers`), and a SIGKILLed `ferry serve` leaves no worker behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.test_crash import (
    WAIT,
    _environment,
    _ferry_command,
    _wait_until_up,
    api_client_headers,
    ferry,
)

pytestmark = pytest.mark.slow

ACCESS_LINE = re.compile(r"\[(\d+)\] [\d.]+:\d+ - \"GET /auth/me HTTP/1.1\" (\d+)")
HELD_LINE = re.compile(r"\[(\d+)\] [\d.]+:\d+ - \"GET /healthz\?client=(\d) HTTP/1.1\" 200")
STARTED = re.compile(r"\[(\d+)\] Application startup complete")
MOST_REQUESTS = 2000  # each a new connection; both processes answer long before this


def _start(data_dir: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    environment = _environment(data_dir, port) | {
        "FERRY_HTTP_WORKERS": "2",
        "FERRY_LOG_LEVEL": "info",
    }
    with log.open("ab") as output:
        return subprocess.Popen(
            [*_ferry_command(), "serve"],
            env=environment,
            cwd=data_dir.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _started(log: Path) -> set[str]:
    return set(STARTED.findall(log.read_text(errors="replace")))


def _answered_by(log: Path) -> dict[str, set[str]]:
    """Process id -> the statuses its access lines show for /auth/me."""
    found: dict[str, set[str]] = {}
    for pid, status in ACCESS_LINE.findall(log.read_text(errors="replace")):
        found.setdefault(pid, set()).add(status)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_two_processes_answer_and_die_with_ferry_serve(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    log = tmp_path / "ferry.log"
    auth = api_client_headers(data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start(data_dir, log, port)
    try:
        _wait_until_up(process, base, log)
        _wait_for(lambda: len(_started(log)) == 2, "both HTTP processes to start")
        # Said once at start, not by each process: without an SMTP host, emails are not sent.
        assert log.read_text(errors="replace").count("Emails:   recorded, not sent") == 1
        for _ in range(MOST_REQUESTS):
            # A new connection each time: the kernel gives it to whichever process accepts.
            assert httpx.get(f"{base}/auth/me", headers=auth).status_code == 200
            if len(_answered_by(log)) == 2:
                break
        answered = _answered_by(log)
        assert set(answered) == _started(log)
        assert str(process.pid) in answered
        assert all(statuses == {"200"} for statuses in answered.values())

        # Audited requests from four clients at once, answered by both processes: one chain.
        def search(_: int) -> int:
            return httpx.get(f"{base}/dicom-web/studies", headers=auth).status_code

        with ThreadPoolExecutor(4) as clients:
            assert set(clients.map(search, range(100))) == {200}
        verified = ferry(data_dir, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # Four clients connecting one after another and staying connected (as STOW-RS and
        # WADO-RS tools do) are served two by each process: the least busy accepts.
        time.sleep(0.3)  # the processes' counts of the closed connections above catch up
        held = [httpx.Client(base_url=base) for _ in range(4)]
        try:
            for number, client in enumerate(held):
                assert client.get(f"/healthz?client={number}").status_code == 200
            _wait_for(lambda: len(HELD_LINE.findall(log.read_text(errors="replace"))) == 4,
                      "the access lines of the four held connections")  # fmt: skip
            by_process = Counter(pid for pid, _ in HELD_LINE.findall(log.read_text()))
            assert sorted(by_process.values()) == [2, 2], by_process
        finally:
            for client in held:
                client.close()

        (worker,) = (int(pid) for pid in answered if int(pid) != process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=WAIT)
        _wait_for(lambda: not _alive(worker), "the worker process to end with its parent")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/healthz", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
