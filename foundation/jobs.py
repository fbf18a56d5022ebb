"""The outbox: work that leaves the request is a job row, claimed by workers, retried, parked.

A job is written in the same transaction as the change that caused it (`enqueue(connection, ...)`).
Workers claim one job at a time with a lease (`locked_until`): a worker that dies leaves a lease
that runs out, and the job is claimed again after a restart. On PostgreSQL the claim uses
`FOR UPDATE SKIP LOCKED`, so any number of workers share the queue; on SQLite the claim is one
conditional UPDATE, which SQLite's single writer makes atomic. Failures are retried with
exponential backoff and parked after `max_attempts`, where administrators see them
(`ferry jobs`, `GET /api/jobs`). Redis, when configured, only wakes workers sooner.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import Column, Connection, Engine, Index, Text, insert, select, update
from sqlmodel import Field, SQLModel, col

from foundation.clock import Clock, utc_now

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=5)
CLAIM_RACES = 8  # SQLite: tries before a worker that keeps losing the race says "nothing due"


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for run_after
    RUNNING = "running"  # claimed; the lease says until when
    DONE = "done"
    PARKED = "parked"  # failed max_attempts times, or failed for good; a person looks at it


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_due", "status", "run_after"),)

    pk: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    status: str = Field(default=JobStatus.QUEUED.value, max_length=16)
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS)
    run_after: datetime
    locked_by: str = Field(default="", max_length=128)
    locked_until: datetime | None = Field(default=None)
    last_error: str = Field(default="", max_length=2000)
    result: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime
    updated_at: datetime


class JobFailed(Exception):
    """A handler's way to say what went wrong; `permanent` parks the job at once."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ClaimedJob:
    pk: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int  # including this one
    max_attempts: int


Handler = Callable[[ClaimedJob], str]  # returns a short result text for administrators


def enqueue(
    connection: Connection,
    kind: str,
    payload: Mapping[str, Any],
    *,
    now: datetime,
    run_after: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Add a job inside the caller's transaction; returns its pk."""
    result = connection.execute(
        insert(Job).values(
            kind=kind,
            payload=orjson.dumps(dict(payload)).decode(),
            status=JobStatus.QUEUED.value,
            attempts=0,
            max_attempts=max_attempts,
            run_after=run_after or now,
            locked_by="",
            last_error="",
            result="",
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def backoff(attempts: int, base_seconds: float = 5.0, cap_seconds: float = 3600.0) -> timedelta:
    """5 s, 10 s, 20 s, ... capped at an hour."""
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)))


class JobQueue:
    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.retry_base_seconds = 5.0

    def add(self, kind: str, payload: Mapping[str, Any], **options: Any) -> int:
        with self.engine.begin() as connection:
            return enqueue(connection, kind, payload, now=self.clock(), **options)

    def claim(self, kinds: frozenset[str]) -> ClaimedJob | None:
        """The oldest due job of these kinds (or one whose lease ran out), now ours."""
        for _ in range(CLAIM_RACES):
            claimed, raced = self._claim_one(kinds)
            if not raced:
                return claimed
        return None  # every due job went to faster workers; the caller looks again later

    def _claim_one(self, kinds: frozenset[str]) -> tuple[ClaimedJob | None, bool]:
        """One try; (None, True) when another worker took the job we picked (SQLite)."""
        now = self.clock()
        due = (
            select(Job.pk)  # type: ignore[call-overload]
            .where(Job.kind.in_(sorted(kinds)))  # type: ignore[attr-defined]
            .where(
                ((Job.status == JobStatus.QUEUED.value) & (Job.run_after <= now))
                | ((Job.status == JobStatus.RUNNING.value) & (Job.locked_until < now))  # type: ignore[operator]
            )
            .order_by(Job.run_after, Job.pk)
            .limit(1)
        )
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            pk = connection.execute(due).scalar()
            if pk is None:
                return None, False
            claimed = connection.execute(
                update(Job)
                .where(col(Job.pk) == pk)
                .where(
                    (col(Job.status) == JobStatus.QUEUED.value)
                    | ((col(Job.status) == JobStatus.RUNNING.value) & (col(Job.locked_until) < now))
                )
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=Job.attempts + 1,
                    locked_by=self.worker_id,
                    locked_until=now + LEASE,
                    updated_at=now,
                )
            )
            if claimed.rowcount != 1:
                return None, True
            row = connection.execute(
                select(
                    col(Job.kind), col(Job.payload), col(Job.attempts), col(Job.max_attempts)
                ).where(col(Job.pk) == pk)
            ).one()
        job = ClaimedJob(int(pk), row[0], orjson.loads(row[1]), int(row[2]), int(row[3]))
        return job, False

    def extend(self, job: ClaimedJob) -> bool:
        """Keep the lease while a long delivery runs; False when another worker took the job."""
        now = self.clock()
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(Job)
                .where(
                    Job.pk == job.pk,  # type: ignore[arg-type]
                    Job.status == JobStatus.RUNNING.value,  # type: ignore[arg-type]
                    Job.locked_by == self.worker_id,  # type: ignore[arg-type]
                )
                .values(locked_until=now + LEASE, updated_at=now)
            )
        return changed.rowcount == 1

    def complete(self, job: ClaimedJob, result: str = "") -> None:
        self._finish(job, status=JobStatus.DONE, result=result[:4000], last_error="")

    def fail(self, job: ClaimedJob, error: str, *, permanent: bool = False) -> JobStatus:
        """Retry later with backoff, or park: after max_attempts, or at once if permanent."""
        parked = permanent or job.attempts >= job.max_attempts
        if parked:
            self._finish(job, status=JobStatus.PARKED, last_error=error[:2000])
            return JobStatus.PARKED
        delay = backoff(job.attempts, self.retry_base_seconds)
        self._finish(
            job,
            status=JobStatus.QUEUED,
            last_error=error[:2000],
            run_after=self.clock() + delay,
        )
        return JobStatus.QUEUED

    def _finish(self, job: ClaimedJob, **values: Any) -> None:
        """Only while the lease is ours: a worker whose lease ran out and was reclaimed must not
        requeue or close a job another worker is running."""
        values["status"] = values["status"].value
        with self.engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(
                    Job.pk == job.pk,  # type: ignore[arg-type]
                    Job.status == JobStatus.RUNNING.value,  # type: ignore[arg-type]
                    Job.locked_by == self.worker_id,  # type: ignore[arg-type]
                )
                .values(locked_by="", locked_until=None, updated_at=self.clock(), **values)
            )

    def retry(self, pk: int, payload_changes: Mapping[str, Any] | None = None) -> bool:
        """An administrator sends a parked job round again, with a fresh count of attempts.

        `payload_changes` carries what the person decided (say, deliver without reconciliation).
        """
        values: dict[str, Any] = {
            "status": JobStatus.QUEUED.value,
            "attempts": 0,
            "run_after": self.clock(),
            "updated_at": self.clock(),
        }
        with self.engine.begin() as connection:
            if payload_changes:
                current = connection.execute(
                    select(col(Job.payload)).where(col(Job.pk) == pk)
                ).scalar()
                if current is None:
                    return False
                merged = {**orjson.loads(current), **payload_changes}
                values["payload"] = orjson.dumps(merged).decode()
            changed = connection.execute(
                update(Job)
                .where(col(Job.pk) == pk, col(Job.status) == JobStatus.PARKED.value)
                .values(**values)
            )
        return changed.rowcount == 1

    def get(self, pk: int) -> Job | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(Job).where(col(Job.pk) == pk)).first()
        return _job(row._mapping) if row else None

    def underway(self, kind: str, key: str, value: str) -> bool:
        """Whether a job of `kind` whose payload has `key` = `value` is queued or running."""
        marker = orjson.dumps({key: value}).decode()[1:-1]  # payloads are compact JSON
        statement = select(col(Job.pk)).where(
            col(Job.kind) == kind,
            col(Job.status).in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
            col(Job.payload).contains(marker),
        )
        with self.engine.connect() as connection:
            return connection.execute(statement.limit(1)).first() is not None

    def list(
        self, status: str | None = None, kind: str | None = None, limit: int = 200
    ) -> list[Job]:
        statement = select(Job).order_by(col(Job.pk).desc()).limit(limit)
        if status:
            statement = statement.where(col(Job.status) == status)
        if kind:
            statement = statement.where(col(Job.kind) == kind)
        with self.engine.connect() as connection:
            return [_job(row._mapping) for row in connection.execute(statement)]


def _job(mapping: Mapping[Any, Any]) -> Job:
    values = {key: value for key, value in mapping.items()}
    job: Job = values.get("Job") or Job(**values)
    return job


class Worker:
    """Runs handlers for claimed jobs in a thread until stopped; `run_once` for tests and CLI."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        idle_seconds: float = 1.0,
        ticks: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        self.idle_seconds = idle_seconds
        self.ticks = list(ticks)  # periodic sweeps (due transfers), run between jobs
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Claim and run one job; False when nothing was due."""
        job = self.queue.claim(frozenset(self.handlers))
        if job is None:
            return False
        try:
            result = self.handlers[job.kind](job)
        except JobFailed as error:
            status = self.queue.fail(job, str(error), permanent=error.permanent)
            log.warning("job %s (%s) failed: %s; now %s", job.pk, job.kind, error, status.value)
        except Exception as error:  # a bug or an outage: retried, never lost
            log.exception("job %s (%s) raised", job.pk, job.kind)
            self.queue.fail(job, f"{type(error).__name__}: {error}")
        else:
            self.queue.complete(job, result)
        return True

    def run_until_idle(self, limit: int = 1000) -> int:
        done = 0
        while done < limit and self.run_once():
            done += 1
        return done

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ferry-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_ticks(self) -> None:
        for tick in self.ticks:
            try:
                tick()
            except Exception:  # one failing sweep must not stop the worker
                log.exception("periodic task %r failed", tick)

    def _loop(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_tick >= self.idle_seconds:
                self.run_ticks()
                last_tick = time.monotonic()
            try:
                busy = self.run_once()
            except Exception:  # the database went away: wait and try again
                log.exception("job worker could not claim")
                busy = False
            if not busy:
                self._wake.wait(self.idle_seconds)
                self._wake.clear()
