"""DCMTK peers (PS3.4 Annex B, Storage): storescu sends, storescp receives and writes to disk.

Every DCMTK tool runs with `TCP_NODELAY=1` in its environment: without it Nagle's algorithm
stalls each C-STORE about 45 ms (FIELD-NOTES.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from _servers import LOOPBACK, READY_TIMEOUT_S, STOP_TIMEOUT_S, ServerError, free_port

CALLING_AE = "STORESCU"  # storescu's AE title: a node of BENCH on Ferry
STORESCU_TIMEOUT_S = 1800.0


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerError(f"DCMTK's {name} is not installed (apt-get install dcmtk)")
    return path


def echo(port: int, called_ae: str, timeout: float = 10.0) -> bool:
    """One C-ECHO from storescu's AE title: True when the peer answered it."""
    argv = [dcmtk_tool("echoscu"), "-to", "2", "-aet", CALLING_AE, "-aec", called_ae]
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run(
            [*argv, LOOPBACK, str(port)], env=dcmtk_env(), capture_output=True, timeout=timeout
        )
        return done.returncode == 0
    return False


def wait_for_echo(name: str, port: int, called_ae: str, alive: object = None) -> None:
    """Until the peer answers C-ECHO; `alive()`, when given, says whether its process still runs."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise ServerError(f"{name} exited before answering C-ECHO on port {port}")
        if echo(port, called_ae):
            return
        time.sleep(0.2)
    raise ServerError(f"{name} did not answer C-ECHO on port {port} in {READY_TIMEOUT_S:.0f} s")


@dataclass(frozen=True)
class Sent:
    """What one or more storescu processes did, timed from the first start to the last exit."""

    associations: int
    files: int
    seconds: float
    errors: tuple[str, ...]  # one line per failed process: its exit status and last stderr line


def send_folders(port: int, called_ae: str, folders: Sequence[Path]) -> Sent:
    """One storescu per folder, all at once, each one association (`+sd`: every file in it)."""
    argv = [dcmtk_tool("storescu"), "-aet", CALLING_AE, "-aec", called_ae, "+sd"]
    files = sum(1 for folder in folders for path in folder.iterdir() if path.is_file())
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in folders]
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [*argv, LOOPBACK, str(port), str(folder)],
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            for folder, log in zip(folders, logs, strict=True)
        ]
        try:
            codes = _wait_all(processes, STORESCU_TIMEOUT_S)
            seconds = time.perf_counter() - started
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        errors = [_failure(code, log) for code, log in zip(codes, logs, strict=True)]
    return Sent(len(folders), files, seconds, tuple(error for error in errors if error))


def _wait_all(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    """Their exit codes, once every one has exited. `Popen.wait(timeout)` polls in steps of up
    to 50 ms, a percent or two of a rate measured over a few seconds; a wait without a timeout
    blocks in `waitpid` and returns as the process exits. Past `timeout_s`, they are killed."""
    watchdog = threading.Timer(timeout_s, lambda: [p.kill() for p in processes])
    watchdog.start()
    try:
        return [process.wait() for process in processes]
    finally:
        watchdog.cancel()


def _failure(code: int, log: IO[bytes]) -> str:
    """storescu's exit status and last error line, when it failed or logged an error."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    failed = [line for line in lines if line.startswith(("E:", "F:"))]
    if code == 0 and not failed:
        return ""
    return f"storescu exit {code}: {(failed or lines or [''])[-1]}"


class StoreSCP:
    """DCMTK's storescp writing each instance to a file in its own folder, a process per
    association (`--fork`), so that parallel senders are served in parallel, as by the others."""

    def __init__(self, name: str = "storescp", ae_title: str = "STORESCP") -> None:
        self.name = name
        self.ae_title = ae_title
        self.port = 0
        self.version: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def output(self) -> Path:
        if self._folder is None:
            raise ServerError(f"{self.name} is not running")
        return self._folder / "received"

    def start(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.output.mkdir()
        self.port = free_port()
        argv = [dcmtk_tool("storescp"), "--fork", "-aet", self.ae_title, "-od", str(self.output)]
        with open(self._folder / "storescp.log", "wb") as log:
            self._process = subprocess.Popen(
                [*argv, str(self.port)],
                env=dcmtk_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its forked children share the group we stop
            )
        wait_for_echo(self.name, self.port, self.ae_title, self._alive)
        self.version = read_dcmtk_version("storescp")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # the group of the storescp we started
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def received(self) -> tuple[int, int]:
        """Files written so far and their bytes."""
        sizes = [path.stat().st_size for path in self.output.rglob("*") if path.is_file()]
        return len(sizes), sum(sizes)

    def received_times(self) -> tuple[float, float] | None:
        """Modification times of the first and last file written (seconds since the epoch)."""
        times = [path.stat().st_mtime for path in self.output.rglob("*") if path.is_file()]
        return (min(times), max(times)) if times else None

    def clear(self) -> None:
        """Received files removed: disk space for the next phase."""
        for path in self.output.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def describe(self) -> dict[str, object]:
        return {
            "port": self.port,
            "ae_title": self.ae_title,
            "pid": self.pid,
            "version": self.version,
        }

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None


def read_dcmtk_version(tool: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            [dcmtk_tool(tool), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        for word in text.split():
            if word.startswith("v3") or word.startswith("v4"):
                return word.lstrip("v")
    return None


class NullSCP:
    """`_dimse_null.py`: a pynetdicom C-STORE SCP whose handler only deletes the received file,
    with Ferry's maximum PDU; the count of instances it answered is read from a file."""

    script = Path(__file__).resolve().parent / "_dimse_null.py"

    def __init__(self, name: str = "pynetdicom", ae_title: str = "NULLSCP") -> None:
        self.name = name
        self.ae_title = ae_title
        self.port = 0
        self.version: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.port = free_port()
        argv = [sys.executable, str(self.script), str(self.port), self.ae_title,
                str(self._folder / "count")]  # fmt: skip
        env = {**os.environ, "TMPDIR": str(self._folder)}  # its received files go there
        with open(self._folder / "scp.log", "wb") as log:
            self._process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_echo(self.name, self.port, self.ae_title, self._alive)
        with contextlib.suppress(ImportError):
            import pynetdicom

            self.version = pynetdicom.__version__

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def received(self) -> int:
        if self._folder is None:
            raise ServerError(f"{self.name} is not running")
        try:
            return int((self._folder / "count").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def describe(self) -> dict[str, object]:
        return {"port": self.port, "ae_title": self.ae_title, "pid": self.pid,
                "version": self.version}  # fmt: skip

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None
