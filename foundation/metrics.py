"""Operational metrics in the Prometheus exposition format, shared by all of Ferry's processes.

Ferry runs several processes (the HTTP server, DIMSE bridge processes sharing a port, job
workers), so the metrics use prometheus-client's multiprocess mode: each process writes its
counters and histograms to memory-mapped files in one folder (`<data>/metrics`, named to the
library and to child processes by `PROMETHEUS_MULTIPROC_DIR`), and a scrape merges the files.

`configure(folder)` is called by the composition root before anything is counted; `ferry serve`
also empties the folder at start (`clean=True`), since files of processes that ended would
otherwise count for ever. Until `configure` runs, what is recorded stays in this process's
memory and is never scraped. Gauges that describe the present (jobs waiting, free disk space,
the audit shipping backlog) are not recorded here: collectors read them at scrape time.

Every metric has labels, so its values are created when first used, after `configure`. Labels
are fixed vocabularies (route templates, statuses, edges), never paths, UIDs or patient data.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_NO_REGISTRY: CollectorRegistry | None = None  # metrics live only in the multiprocess files

HTTP_REQUESTS = Counter(
    "ferry_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=_NO_REGISTRY,
)
HTTP_DURATION = Histogram(
    "ferry_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=_NO_REGISTRY,
)
STORED_INSTANCES = Counter(
    "ferry_store_instances",
    "Instances received, by service (stow-rs, c-store) and outcome (stored, failed)",
    ["service", "outcome"],
    registry=_NO_REGISTRY,
)
STORED_BYTES = Counter(
    "ferry_store_bytes",
    "Bytes of the instances stored, by service (stow-rs, c-store)",
    ["service"],
    registry=_NO_REGISTRY,
)
QIDO_RESULTS = Histogram(
    "ferry_qido_results",
    "Matches returned by one QIDO-RS search, by level (study, series, instance)",
    ["level"],
    buckets=(0, 1, 10, 50, 100, 500, 1000, 5000),
    registry=_NO_REGISTRY,
)
FORWARD_RESULTS = Counter(
    "ferry_forward_results",
    "Forwarding of studies to nodes, by result (delivered, retry, parked)",
    ["result"],
    registry=_NO_REGISTRY,
)
RETENTION_DELETIONS = Counter(
    "ferry_retention_deletions",
    "What the retention sweeper ended, by kind (study: deleted; grant: a holder's access)",
    ["kind"],
    registry=_NO_REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "ferry_audit_write_failures",
    "Audit events that could not be written (the audited action was refused), by action",
    ["action"],
    registry=_NO_REGISTRY,
)
ATNA_SHIPPED = Counter(
    "ferry_atna_shipped_events",
    "Audit events shipped to the audit record repository, by transport (tls, udp)",
    ["transport"],
    registry=_NO_REGISTRY,
)
ATNA_FAILURES = Counter(
    "ferry_atna_send_failures",
    "Failed attempts to ship audit events to the audit record repository, by transport",
    ["transport"],
    registry=_NO_REGISTRY,
)
ALL = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    STORED_INSTANCES,
    STORED_BYTES,
    QIDO_RESULTS,
    FORWARD_RESULTS,
    RETENTION_DELETIONS,
    AUDIT_WRITE_FAILURES,
    ATNA_SHIPPED,
    ATNA_FAILURES,
)

_configured: list[Path] = []  # the folder this process writes to, once configured
_configuring = threading.Lock()


def configure(folder: Path, *, clean: bool = False) -> None:
    """Write this process's metrics under `folder` (created); `clean` first removes old files.

    Only `ferry serve` cleans, at its start, before it starts other processes: a process that
    joins a running server (a bridge process, `uvicorn --workers`) must keep the others' files.
    """
    folder = folder.resolve()
    with _configuring:
        folder.mkdir(parents=True, exist_ok=True)
        if clean:
            for old in folder.glob("*.db"):
                old.unlink(missing_ok=True)
        if _configured == [folder] and not clean:
            return
        os.environ[MULTIPROC_VARIABLE] = str(folder)  # child processes inherit it
        # The library picks its value store when it is first imported; a fresh one here makes
        # the choice independent of import order and opens this folder's files from now on.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        with warnings.catch_warnings():
            # The library warns that clearing leaves the files as they are: here only this
            # process's handles go (values created before now were in memory or elsewhere).
            warnings.simplefilter("ignore", UserWarning)
            for metric in ALL:
                metric.clear()
        _configured[:] = [folder]


def remove_files(path: Path) -> None:
    """`ferry serve` at its end, once its other processes have stopped: nothing stays in RAM."""
    shutil.rmtree(path, ignore_errors=True)


def folder() -> Path | None:
    """The folder this process writes to, or None before `configure`."""
    return _configured[0] if _configured else None


def registry(collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """Every process's metrics (merged from the files at each collection), and `collectors`."""
    merged = CollectorRegistry(auto_describe=False)
    path = folder()
    if path is not None:
        MultiProcessCollector(merged, path=str(path))  # type: ignore[no-untyped-call]
    for collector in collectors:
        merged.register(collector)
    return merged


def exposition(collectors: Iterable[Collector] = ()) -> bytes:
    """The text format of `registry(collectors)`, collected now."""
    return generate_latest(registry(collectors))


def record_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def record_store(service: str, stored: int, failed: int, stored_bytes: int) -> None:
    """One STOW-RS request's or one C-STORE's instances: how many were kept, and their bytes."""
    if stored:
        STORED_INSTANCES.labels(service, "stored").inc(stored)
        STORED_BYTES.labels(service).inc(stored_bytes)
    if failed:
        STORED_INSTANCES.labels(service, "failed").inc(failed)
