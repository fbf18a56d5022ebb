"""STOW-RS (PS3.18 10.5): store batches with concurrent clients, checking every response."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx
import orjson

from _instances import STOW_CONTENT_TYPE, Batch
from _memory import PeakMemory
from _report import HIGHER, LOWER, Figure
from _servers import Server

# PS3.18 Table 10.5.3-1, Store Instances Response Module
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
STOW_HEADERS = {"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"}
POLL_S = 0.2  # how often blocked threads look up to see whether the run was stopped
PROGRESS_EVERY_S = 5.0


class StoreFailed(RuntimeError):
    """A STOW-RS answer did not acknowledge every instance of its request."""


@dataclass(frozen=True)
class StoreTally:
    instances: int
    payload_bytes: int
    requests: int
    seconds: float


class ReplayableBatches:
    """Batches made on the first pass and kept, so every server is sent the same bytes."""

    def __init__(self, source: Iterable[Batch]) -> None:
        self._source = iter(source)
        self._made: list[Batch] = []

    def __iter__(self) -> Iterator[Batch]:
        yield from list(self._made)
        for batch in self._source:
            self._made.append(batch)
            yield batch


def measure_ingest(server: Server, batches: list[Batch], clients: int) -> list[Figure]:
    """Instances/s, MB/s and the server's peak RSS while `clients` clients store `batches`."""
    memory = PeakMemory(server.pid) if server.pid else None
    with memory or contextlib.nullcontext():
        tally = store_instances(server, batches, clients)
    group, label = f"stow.c{clients}", ingest_label(clients)
    raw = {
        "instances": tally.instances,
        "payload_bytes": tally.payload_bytes,
        "requests": tally.requests,
        "seconds": tally.seconds,
    }
    return [
        Figure(
            group,
            f"{group}.rate",
            label,
            "instances/s",
            HIGHER,
            tally.instances / tally.seconds,
            raw,
        ),
        Figure(
            group,
            f"{group}.throughput",
            label,
            "MB/s",
            HIGHER,
            tally.payload_bytes / tally.seconds / 1e6,
            raw,
        ),
        Figure(
            group,
            f"{group}.peak_rss",
            f"{label}, server peak RSS",
            "MiB",
            LOWER,
            memory.peak_mib if memory else None,
            memory.result() if memory else {},
        ),
        Figure(
            group,
            f"{group}.peak_pss",
            f"{label}, server peak PSS (sampled)",
            "MiB",
            LOWER,
            memory.peak_pss_mib if memory else None,
            memory.result() if memory else {},
        ),
    ]


def ingest_label(clients: int) -> str:
    return f"STOW-RS ingest 512×512 CT, {clients} client{'s' if clients > 1 else ''}"


def store_instances(
    server: Server,
    batches: Iterable[Batch],
    clients: int,
    progress: Callable[[int], None] | None = None,
) -> StoreTally:
    """POST every batch to /studies from `clients` threads, each with its own HTTP client.

    The clock starts once the clients exist and stops when the last answer has been checked.
    Batches are drawn lazily, so a generator's work overlaps the servers' (fills, not timed).
    """
    work: queue.Queue[Batch | None] = queue.Queue(maxsize=2 * clients)
    stop = threading.Event()
    errors: list[BaseException] = []
    tally = _Counter()
    http_clients = [server.client() for _ in range(clients)]
    threads = [
        threading.Thread(
            target=_store_worker,
            args=(http_clients[i], server.base_url, work, tally, errors, stop),
            daemon=True,
        )
        for i in range(clients)
    ]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        _feed(work, batches, len(threads), stop, lambda: _report(progress, tally))
        for thread in threads:
            while thread.is_alive():
                thread.join(POLL_S)
    finally:
        stop.set()
        for http_client in http_clients:
            http_client.close()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    if progress:
        progress(tally.instances)
    return StoreTally(tally.instances, tally.payload_bytes, tally.requests, seconds)


def check_store_response(response: httpx.Response, batch: Batch) -> None:
    """Every SOP Instance UID of the batch must be referenced: Orthanc answers 200 even to a
    truncated or garbled body, listing only what it kept."""
    if response.status_code != 200:
        raise StoreFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    answer = orjson.loads(response.content)
    failed = answer.get(FAILED_SOP_SEQUENCE, {}).get("Value") or []
    referenced = {
        item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
        for item in answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value") or []
    }
    missing = set(batch.sop_uids) - referenced
    if failed or missing:
        raise StoreFailed(
            f"HTTP 200 but {len(failed)} failed and {len(missing)} of {batch.count} instances "
            "not referenced"
        )


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.instances = self.payload_bytes = self.requests = 0
        self.last_report = time.monotonic()

    def add(self, batch: Batch) -> None:
        with self._lock:
            self.instances += batch.count
            self.payload_bytes += batch.payload_bytes
            self.requests += 1


def _store_worker(
    client: httpx.Client,
    base_url: str,
    work: queue.Queue[Batch | None],
    tally: _Counter,
    errors: list[BaseException],
    stop: threading.Event,
) -> None:
    try:
        while not stop.is_set():
            try:
                batch = work.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if batch is None:
                return
            response = client.post(f"{base_url}/studies", content=batch.body, headers=STOW_HEADERS)
            check_store_response(response, batch)
            tally.add(batch)
    except Exception as error:  # handed to the main thread, which raises it
        errors.append(error)
        stop.set()


def _feed(
    work: queue.Queue[Batch | None],
    batches: Iterable[Batch],
    workers: int,
    stop: threading.Event,
    tick: Callable[[], None],
) -> None:
    """Queue every batch, then one end marker per worker; give up as soon as a worker fails."""
    end_markers: list[Batch | None] = [None] * workers
    for item in itertools.chain(_until_stopped(batches, stop), end_markers):
        while not stop.is_set():
            try:
                work.put(item, timeout=POLL_S)
                break
            except queue.Full:
                continue
        tick()


def _until_stopped(batches: Iterable[Batch], stop: threading.Event) -> Iterator[Batch]:
    for batch in batches:
        if stop.is_set():
            return
        yield batch


def _report(progress: Callable[[int], None] | None, tally: _Counter) -> None:
    if progress and time.monotonic() - tally.last_report >= PROGRESS_EVERY_S:
        tally.last_report = time.monotonic()
        progress(tally.instances)
