"""C-STORE ingest (PS3.4 Annex B) with DCMTK's storescu into each receiver, checked and timed."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sqlalchemy import text

from _dimse_ferry import FerryDimse
from _dimse_peers import NullSCP, StoreSCP, send_folders
from _memory import PeakMemory, _process_tree
from _report import HIGHER, LOWER, Figure
from _servers import LOOPBACK, OrthancServer, free_port

ORTHANC_AE = "ORTHANC"
SETTLE_S = 10.0  # how long a receiver may take to show what it acknowledged
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StoreFailed(RuntimeError):
    """storescu reported a failure, or the receiver holds fewer instances than were sent."""


@dataclass(frozen=True)
class InstanceSet:
    """Part 10 files on disk, split into one folder per association."""

    name: str
    folders: tuple[Path, ...]
    sop_uids: tuple[str, ...]
    study_uids: tuple[str, ...]
    payload_bytes: int

    @property
    def count(self) -> int:
        return len(self.sop_uids)


class Receiver(Protocol):
    """A C-STORE SCP under test: where storescu sends, and how many instances it holds."""

    name: str
    ae_title: str

    @property
    def dicom_port(self) -> int: ...

    @property
    def ingest_pid(self) -> int | None: ...

    def held(self) -> int: ...


class FerryReceiver:
    def __init__(self, server: FerryDimse) -> None:
        self.server = server
        self.name = server.name
        self.ae_title = server.ae_title

    @property
    def dicom_port(self) -> int:
        return self.server.dicom_port

    @property
    def ingest_pid(self) -> int | None:
        return self.server.ingest_pid

    def held(self) -> int:
        with self.server.engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM instance")).scalar() or 0)


class StoreSCPReceiver:
    def __init__(self, server: StoreSCP) -> None:
        self.server = server
        self.name = server.name
        self.ae_title = server.ae_title

    @property
    def dicom_port(self) -> int:
        return self.server.port

    @property
    def ingest_pid(self) -> int | None:
        return self.server.pid

    def held(self) -> int:
        return self.server.received()[0]


class NullSCPReceiver:
    def __init__(self, server: NullSCP) -> None:
        self.server = server
        self.name = server.name
        self.ae_title = server.ae_title

    @property
    def dicom_port(self) -> int:
        return self.server.port

    @property
    def ingest_pid(self) -> int | None:
        return self.server.pid

    def held(self) -> int:
        return self.server.received()


class OrthancReceiver:
    """Orthanc's DICOM server: any called AE title, any calling AE may store (shipped otherwise)."""

    def __init__(self, server: OrthancServer) -> None:
        self.server = server
        self.name = server.name
        self.ae_title = ORTHANC_AE

    @property
    def dicom_port(self) -> int:
        return int(self.server.extra_config["DicomPort"])

    @property
    def ingest_pid(self) -> int | None:
        return self.server.pid

    def held(self) -> int:
        with self.server.client(timeout=30.0) as client:
            answer = client.get(f"http://{LOOPBACK}:{self.server.port}/statistics")
        answer.raise_for_status()
        return int(answer.json()["CountInstances"])


class OrthancDimse(OrthancServer):
    """Orthanc with its DICOM server on a free loopback port and no plugin. Its DIMSE is DCMTK's,
    which leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment too."""

    def __init__(self, binary: str) -> None:
        super().__init__(
            binary,
            extra_config={
                "DicomServerEnabled": True,
                "DicomAet": ORTHANC_AE,
                "DicomPort": free_port(),
                "DicomCheckCalledAet": False,
                "DicomAlwaysAllowStore": True,  # storescu's AE is no configured modality
                "DicomAlwaysAllowEcho": True,
                "Plugins": [],  # C-STORE needs none; the DICOMweb plugin would only idle
            },
        )

    def command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(data_dir, port)
        return argv, {**env, "TCP_NODELAY": "1"}


class CpuTime:
    """User and system CPU seconds of a process tree while the `with` block runs (children
    reaped meanwhile count through their parent's cutime, as storescp's forked ones do)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> CpuTime:
        self._start = tree_cpu_seconds(self.pid)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.seconds = tree_cpu_seconds(self.pid) - self._start


def tree_cpu_seconds(root: int) -> float:
    ticks = 0
    for pid in _process_tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def ingest_label(associations: int) -> str:
    plural = "s" if associations > 1 else ""
    return f"C-STORE ingest 512×512 CT, {associations} association{plural}"


def measure_ingest(receiver: Receiver, instances: InstanceSet) -> list[Figure]:
    """Instances/s and MB/s from the first storescu's start to the last one's exit, the receiver's
    peak RSS and CPU time meanwhile; then every instance must be held."""
    os.sync()  # the previous receiver's writes are not flushed on this one's clock
    before = receiver.held()
    pid = receiver.ingest_pid
    memory = PeakMemory(pid) if pid else None
    cpu = CpuTime(pid) if pid else None
    with memory or contextlib.nullcontext(), cpu or contextlib.nullcontext():
        sent = send_folders(receiver.dicom_port, receiver.ae_title, instances.folders)
    if sent.errors:
        raise StoreFailed("; ".join(sent.errors))
    held = _settled(receiver, before + instances.count)
    if held - before != instances.count:
        raise StoreFailed(f"{held - before} of {instances.count} instances held after storing")
    return ingest_figures(receiver.name, instances, sent.associations, sent.seconds, memory, cpu)


def ingest_figures(
    name: str,
    instances: InstanceSet,
    associations: int,
    seconds: float,
    memory: PeakMemory | None,
    cpu: CpuTime | None,
) -> list[Figure]:
    group, label = f"ingest.a{associations}", ingest_label(associations)
    raw = {
        "instances": instances.count,
        "payload_bytes": instances.payload_bytes,
        "associations": associations,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu.seconds, 3) if cpu else None,
        "memory": memory.result() if memory else {},
    }
    cpu_ms = 1000 * cpu.seconds / instances.count if cpu else None
    return [
        Figure(
            group, f"{group}.rate", label, "instances/s", HIGHER, instances.count / seconds, raw
        ),
        Figure(
            group, f"{group}.throughput", label, "MB/s", HIGHER,
            instances.payload_bytes / seconds / 1e6, raw,
        ),
        Figure(
            group, f"{group}.peak_rss", f"{label}, receiver peak RSS", "MiB", LOWER,
            memory.peak_mib if memory else None, raw,
        ),
        Figure(
            group, f"{group}.peak_pss", f"{label}, receiver peak PSS (sampled)", "MiB", LOWER,
            memory.peak_pss_mib if memory else None, raw,
        ),
        Figure(
            group, f"{group}.cpu", f"{label}, receiver CPU per instance", "ms", LOWER, cpu_ms, raw
        ),
    ]  # fmt: skip


def _settled(receiver: Receiver, expected: int) -> int:
    deadline = time.monotonic() + SETTLE_S
    while True:
        held = receiver.held()
        if held >= expected or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def split_folders(files: Sequence[Path], root: Path, parts: int) -> tuple[Path, ...]:
    """Consecutive runs of `files` moved into `parts` folders under `root`: studies stay whole
    where the split allows, as modalities send them."""
    folders = []
    size = -(-len(files) // parts)
    for number in range(parts):
        folder = root / f"{number}"
        folder.mkdir(parents=True)
        for path in files[number * size : (number + 1) * size]:
            path.rename(folder / path.name)
        folders.append(folder)
    return tuple(folders)
