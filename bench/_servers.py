"""Servers under test: started on free loopback ports with fresh data folders, or reached by URL."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

import _progress

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
ORTHANC_BINARY = "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
)
# Only the DICOMweb plugin: naming the plugins folder would load the others installed beside it.


class ServerError(RuntimeError):
    """A server could not be started or did not become ready."""


class Server:
    """A DICOMweb server reached at `base_url`, the DICOMweb root; `pid` is None when not ours."""

    def __init__(self, name: str, base_url: str = "", token: str | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept-Encoding": "identity"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.version: str | None = None

    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> None:
        """A server given by URL is already running."""

    def stop(self) -> None:
        """A server given by URL is left running."""

    def describe(self) -> dict[str, object]:
        return {"base_url": self.base_url, "started_by_benchmark": False, "version": self.version}

    def client(self, timeout: float = 120.0) -> httpx.Client:
        """A fresh client: one per thread, every request with `Accept-Encoding: identity`."""
        return httpx.Client(headers=self.headers, timeout=timeout)


class ManagedServer(Server):
    """A server process this benchmark starts, owns by pid, stops and cleans up after."""

    ready_path = "/"

    def __init__(self, name: str, token: str | None = None) -> None:
        super().__init__(name, token=token)
        self._process: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None
        self.port = 0
        self.started_pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self._data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.port = free_port()
        argv, env = self.command(self._data_dir, self.port)
        self.prepare(argv, env)
        with open(self._data_dir / "server.log", "wb") as log:
            # A session of its own: Ctrl-C reaches the benchmark, which then stops the server.
            self._process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_pid = self._process.pid
        self.base_url = f"http://{LOOPBACK}:{self.port}/dicom-web"
        try:
            self._wait_ready(f"http://{LOOPBACK}:{self.port}{self.ready_path}")
            self.version = self.read_version()
        except BaseException:  # not ready in time, or interrupted: not left running
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
                process.wait()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "started_by_benchmark": True, "pid": self.started_pid}

    def command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def prepare(self, argv: list[str], env: dict[str, str]) -> None:
        """Runs before the server starts, with its command line and environment."""

    def read_version(self) -> str | None:
        return None

    @property
    def data_dir(self) -> Path:
        """The server's temporary folder, while it runs."""
        if self._data_dir is None:
            raise ServerError(f"{self.name} is not running")
        return self._data_dir

    def log_tail(self, lines: int = 20) -> str:
        if self._data_dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self._data_dir / "server.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise ServerError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.1)
        raise ServerError(
            f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )


class OrthancServer(ManagedServer):
    """Orthanc with only its DICOMweb plugin, configured as FIELD-NOTES.md says."""

    ready_path = "/system"

    def __init__(
        self,
        binary: str = ORTHANC_BINARY,
        plugin: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("orthanc")
        self.binary = binary
        self.plugin = plugin or find_orthanc_plugin()
        self.extra_config = dict(extra_config or {})  # over the defaults below (DIMSE: dimse.py)

    def command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        config = {
            "Name": "ferry-bench",
            "HttpPort": port,
            "DicomServerEnabled": False,  # DIMSE is not measured: no port to claim
            "StorageDirectory": str(data_dir / "storage"),
            "IndexDirectory": str(data_dir / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DefaultEncoding": "Utf8",
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.extra_config,
        }
        path = data_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return [self.binary, str(path)], dict(os.environ)

    def read_version(self) -> str | None:
        root = f"http://{LOOPBACK}:{self.port}"
        with self.client(timeout=5.0) as client:
            system = client.get(f"{root}/system").json()
            plugin = client.get(f"{root}/plugins/dicom-web")
        if plugin.status_code != 200:  # configured without it (bench/dimse.py)
            return str(system["Version"])
        return f"{system['Version']} (dicom-web {plugin.json()['Version']})"


class FerryServer(ManagedServer):
    """Ferry's own `ferry serve`, from the virtualenv this benchmark runs in.

    Every DICOMweb request needs a principal, and sees only its institution's studies: before
    the server starts, `ferry admin` creates the institution BENCH and an API client of it whose
    token (printed once) then goes with every request the benchmark sends.
    """

    ready_path = "/readyz"
    institution = "BENCH"
    client_name = "bench"
    client_roles = "sender,receiver,viewer"
    client_scopes = "read,write,download"

    def __init__(self, name: str = "ferry", extra_env: dict[str, str] | None = None) -> None:
        super().__init__(name)
        self.extra_env = dict(extra_env or {})
        self.ferry_argv: list[str] = []
        self.env: dict[str, str] = {}

    def command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        script = Path(sys.executable).parent / "ferry"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "ferry.cli"]
        (data_dir / "data").mkdir()
        # Inherited FERRY_* variables could point the server at another database: dropped.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env.update(
            FERRY_DATA_DIR=str(data_dir / "data"),
            FERRY_HTTP_PORT=str(port),
            FERRY_HTTP_HOST=LOOPBACK,
            **self.extra_env,
        )
        self.ferry_argv, self.env = argv, env
        return [*argv, "serve"], env

    def prepare(self, argv: list[str], env: dict[str, str]) -> None:
        self.admin("create-institution", self.institution, "Benchmark")
        token = self.admin(
            "create-api-client", self.client_name,
            "--institution", self.institution,
            "--roles", self.client_roles,
            "--scopes", self.client_scopes,
        ).strip()  # fmt: skip
        if not token or len(token.splitlines()) != 1:
            raise ServerError(f"ferry admin create-api-client printed no token: {token!r}")
        self.headers["Authorization"] = f"Bearer {token}"

    def admin(self, *arguments: str) -> str:
        """Runs `ferry admin ...` on this server's data folder; its stdout (secrets only)."""
        result = subprocess.run(
            [*self.ferry_argv, "admin", *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ServerError(
                f"ferry admin {arguments[0]} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    @property
    def database_url(self) -> str:
        """The index `ferry serve` opened: SQLite in the data folder unless `extra_env` said."""
        if "FERRY_DATABASE_URL" in self.env:
            return self.env["FERRY_DATABASE_URL"]
        return f"sqlite:///{Path(self.env['FERRY_DATA_DIR']).resolve() / 'ferry.db'}"

    def read_version(self) -> str | None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version("ferry")
        return None


def find_orthanc_plugin() -> str:
    for candidate in ORTHANC_PLUGINS:
        if Path(candidate).is_file():
            return candidate
    raise ServerError(f"Orthanc's DICOMweb plugin not found at any of {ORTHANC_PLUGINS}")


def free_port() -> int:
    """A loopback port free now; the small race with other programs is accepted."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def stop_logged(server: Server) -> None:
    """Stop a server, saying so when it is one the benchmark started."""
    if server.pid is not None:
        _progress.log(f"stopping {server.name} (pid {server.pid})")
    server.stop()
