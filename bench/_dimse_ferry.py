"""Ferry under DIMSE load: `ferry serve` with its DICOM port and BENCH's nodes; the bridge or the
job worker in a process of ours (`_dimse_process.py`) when asked to (profiling), or when
`ferry serve` does not run them (a build without them, FERRY_JOBS_ENABLED=false)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, bindparam, create_engine, text

from _dimse_peers import CALLING_AE, echo, wait_for_echo
from _progress import log
from _servers import LOOPBACK, STOP_TIMEOUT_S, FerryServer, ServerError, free_port

AE_TITLE = "FERRY"
REPOSITORY = Path(__file__).resolve().parent.parent
PROCESS_SCRIPT = Path(__file__).resolve().parent / "_dimse_process.py"
SERVE_ECHO_S = 3.0  # how long `ferry serve`'s own bridge may take to answer after /readyz
COUNT_CHUNK = 500  # SOP Instance UIDs per counting query
PROFILE_WRITE_S = 10.0  # how long the bridge may take to write a profile phase


class FerryDimse(FerryServer):
    """`ferry serve` on FERRY_DICOM_PORT, with storescu's AE title a node of BENCH that may write
    and query.

    When `own_bridge` or `profile` asks for it, `ferry serve` gets port 0 (no listener) and the
    bridge runs in a process of ours on the same data folder and index; also when `ferry serve`
    answers no C-ECHO on its port.
    """

    def __init__(
        self,
        own_bridge: bool = False,
        profile: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.dicom_port = free_port()
        serve_port = 0 if own_bridge or profile else self.dicom_port
        super().__init__(
            "ferry",
            extra_env={
                **(extra_env or {}),  # --ferry-env: FERRY_BLOB_FSYNC=false, FERRY_DATABASE_URL=...
                "FERRY_DICOM_PORT": str(serve_port),
                "FERRY_DICOM_AE_TITLE": AE_TITLE,
                "PYTHONPATH": _python_path(),
            },
        )
        self.ae_title = AE_TITLE
        self.profile = profile
        self.bridge_in = ""  # "ferry serve" or "benchmark process"
        self.worker_in = ""
        self.patched_rights: list[str] = []  # nodes whose row `ferry admin add-node` left short
        self.profile_phases: list[str] = []
        self._helpers: dict[str, subprocess.Popen[bytes]] = {}
        self._engine: Engine | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def prepare(self, argv: list[str], env: dict[str, str]) -> None:
        super().prepare(argv, env)
        self.add_node(CALLING_AE, 104, query=True, write=True)

    def start(self) -> None:
        super().start()
        if self.env["FERRY_DICOM_PORT"] != "0" and self._serve_echoes():
            self.bridge_in = "ferry serve"
            return
        if self.env["FERRY_DICOM_PORT"] != "0":
            log(f"ferry: `ferry serve` answers no C-ECHO on {self.dicom_port}; own bridge started")
        arguments = ["--bridge"] + (["--profile", str(self.profile)] if self.profile else [])
        self._start_helper("bridge", arguments)
        wait_for_echo("ferry's bridge", self.dicom_port, self.ae_title, self._helper_alive)
        self.bridge_in = "benchmark process"

    def end_profile_phase(self, label: str) -> None:
        """The bridge writes what it sampled since the last phase, under `label`."""
        bridge = self._helpers.get("bridge")
        if self.profile is None or bridge is None:
            return
        self.profile_phases.append(label)
        bridge.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + PROFILE_WRITE_S
        while time.monotonic() < deadline and len(self.read_profile()) < len(self.profile_phases):
            time.sleep(0.05)

    def read_profile(self) -> list[dict[str, object]]:
        """The phases written so far, each with its `phase` label."""
        if self.profile is None:
            return []
        try:
            segments = json.loads(self.profile.read_text())
        except (OSError, ValueError):
            return []
        labels = [*self.profile_phases, "after the last phase"]
        return [
            {"phase": label, **segment} for label, segment in zip(labels, segments, strict=False)
        ]

    def start_worker(self) -> None:
        """The job worker with the forwarding handler, when `ferry serve` claims no job."""
        if "worker" not in self._helpers:
            self._start_helper("worker", ["--worker"])
            self.worker_in = "benchmark process"

    def stop(self) -> None:
        for name in list(self._helpers):
            self._stop_helper(name)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        super().stop()

    @property
    def ingest_pid(self) -> int | None:
        """The process that receives C-STOREs: `ferry serve`, or our bridge process."""
        bridge = self._helpers.get("bridge")
        return bridge.pid if bridge else self.pid

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "dicom_port": self.dicom_port,
            "ae_title": self.ae_title,
            "bridge_in": self.bridge_in,
            "bridge_pid": self.ingest_pid,
            "worker_in": self.worker_in or "ferry serve",
            "node_rights_patched": self.patched_rights,
        }

    # -- nodes and the index -------------------------------------------------------------------

    def add_node(self, ae_title: str, port: int, *, query: bool, write: bool) -> None:
        flags = ["--query"] * query + ["--write"] * write
        self.admin(
            "add-node", "--institution", self.institution, "--ae-title", ae_title,
            "--host", LOOPBACK, "--port", str(port), *flags,
        )  # fmt: skip
        answer = self.run_process("node-rights", ae_title, *flags)
        if answer.startswith("patched"):
            self.patched_rights.append(ae_title)

    def run_process(self, *arguments: str) -> str:
        """`_dimse_process.py` once, on this server's environment; its stdout."""
        done = subprocess.run(
            [sys.executable, str(PROCESS_SCRIPT), *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise ServerError(f"_dimse_process.py {arguments[0]} failed: {tail}")
        return done.stdout

    @property
    def engine(self) -> Engine:
        """The index, read by the benchmark (counts, job states); SQLite in WAL mode."""
        if self._engine is None:
            self._engine = create_engine(self.database_url)
        return self._engine

    def count_stored(self, sop_uids: Sequence[str]) -> int:
        query = text("SELECT count(*) FROM instance WHERE sop_instance_uid IN :uids").bindparams(
            bindparam("uids", expanding=True)
        )
        found = 0
        with self.engine.connect() as connection:
            for start in range(0, len(sop_uids), COUNT_CHUNK):
                chunk = list(sop_uids[start : start + COUNT_CHUNK])
                found += int(connection.execute(query, {"uids": chunk}).scalar() or 0)
        return found

    def log_tail(self, lines: int = 20) -> str:
        tails = [super().log_tail(lines)]
        for name in self._helpers:
            with contextlib.suppress(OSError, ServerError):
                text_ = (self.data_dir / f"{name}.log").read_text(errors="replace")
                tails.append(f"-- {name}:\n" + "\n".join(text_.splitlines()[-lines:]))
        return "\n".join(tails)

    # -- helper processes ----------------------------------------------------------------------

    def _serve_echoes(self) -> bool:
        deadline = time.monotonic() + SERVE_ECHO_S
        while time.monotonic() < deadline:
            if echo(self.dicom_port, self.ae_title, timeout=5.0):
                return True
            time.sleep(0.2)
        return False

    def _start_helper(self, name: str, arguments: list[str]) -> None:
        env = {**self.env, "FERRY_DICOM_PORT": str(self.dicom_port)}
        with open(self.data_dir / f"{name}.log", "wb") as output:
            self._helpers[name] = subprocess.Popen(
                [sys.executable, str(PROCESS_SCRIPT), "serve", *arguments],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _helper_alive(self) -> bool:
        bridge = self._helpers.get("bridge")
        return bridge is not None and bridge.poll() is None

    def _stop_helper(self, name: str) -> None:
        process = self._helpers.pop(name)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
                process.wait()


def _python_path() -> str:
    """The repository first: an editable install made before a package was added (dimse/,
    exchange/) does not find it until `pip install -e .` runs again."""
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(part for part in (str(REPOSITORY), inherited) if part)
