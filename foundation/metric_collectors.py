"""Metrics read at scrape time: the job queue (depth and oldest age by kind) and free disk space.

These describe the present, so they are not counted by the processes but read when Prometheus
asks, by whichever process answers: one query on the job table, one `statvfs`. A failing read
leaves its metrics out of that scrape (and says so in the log) rather than failing the scrape.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from foundation.clock import Clock, utc_now
from foundation.jobs import Job, JobStatus

log = logging.getLogger(__name__)

WAITING = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.PARKED.value)


class JobQueueCollector:
    """`ferry_jobs{kind,status}` and `ferry_jobs_oldest_age_seconds{kind,status}`."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ferry_jobs",
            "Jobs not done, by kind and status (queued, running, parked)",
            labels=["kind", "status"],
        )
        age = GaugeMetricFamily(
            "ferry_jobs_oldest_age_seconds",
            "Age of the oldest job not done, by kind and status",
            labels=["kind", "status"],
        )
        try:
            rows = self._read()
        except SQLAlchemyError as error:
            log.warning("metrics: the job table could not be read: %s", error)
            return
        now = self.clock()
        for kind, status, count, oldest in rows:
            depth.add_metric([kind, status], count)
            age.add_metric([kind, status], max(0.0, (now - oldest).total_seconds()))
        yield depth
        yield age

    def _read(self) -> list[tuple[str, str, int, datetime]]:
        statement = (
            select(col(Job.kind), col(Job.status), func.count(), func.min(col(Job.created_at)))
            .where(col(Job.status).in_(WAITING))
            .group_by(col(Job.kind), col(Job.status))
        )
        with self.engine.connect() as connection:
            return [(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in connection.execute(statement)]


class DiskSpaceCollector:
    """`ferry_disk_free_bytes` of the data folder, and the reserve below which stores stop."""

    def __init__(self, folder: Path, reserve_bytes: int) -> None:
        self.folder = folder
        self.reserve_bytes = reserve_bytes

    def collect(self) -> Iterator[Metric]:
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError as error:
            log.warning("metrics: free space of %s unknown: %s", self.folder, error)
            return
        yield GaugeMetricFamily(
            "ferry_disk_free_bytes", "Free bytes on the data folder's filesystem", value=free
        )
        yield GaugeMetricFamily(
            "ferry_disk_reserve_bytes",
            "Free bytes below which new stores are refused (FERRY_MIN_FREE_BYTES)",
            value=self.reserve_bytes,
        )
