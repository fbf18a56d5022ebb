"""The outbox queue on SQLite and PostgreSQL: claims, leases, backoff, parking, retry."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ferry.database import create_database_engine, migrate
from foundation.jobs import (
    LEASE,
    ClaimedJob,
    JobFailed,
    JobQueue,
    JobStatus,
    Worker,
    backoff,
    enqueue,
)
from tests.conftest import make_settings

KIND = "test-kind"


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def engine(tmp_path: Path, database_url: str) -> Iterator[Engine]:
    built = create_database_engine(make_settings(tmp_path, database_url))
    migrate(built)
    yield built
    built.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def failing(message: str, *, permanent: bool = False) -> dict[str, object]:
    def handler(job: ClaimedJob) -> str:
        raise JobFailed(message, permanent=permanent)

    return {KIND: handler}


def test_a_job_is_written_in_the_callers_transaction(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock)
    with pytest.raises(RuntimeError), engine.begin() as connection:
        enqueue(connection, KIND, {"n": 1}, now=clock())
        raise RuntimeError("the change that caused the job is rolled back")
    assert queue.list() == []
    with engine.begin() as connection:
        pk = enqueue(connection, KIND, {"n": 2}, now=clock())
    job = queue.get(pk)
    assert job is not None and job.status == JobStatus.QUEUED
    assert job.payload == '{"n":2}'


def test_due_jobs_run_in_order_and_keep_their_result(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock)
    later = queue.add(KIND, {"n": "later"}, run_after=clock() + timedelta(minutes=1))
    first = queue.add(KIND, {"n": "first"})
    second = queue.add(KIND, {"n": "second"})
    queue.add("other-kind", {})
    seen: list[str] = []
    worker = Worker(queue, {KIND: lambda job: seen.append(job.payload["n"]) or "ok"})
    assert worker.run_until_idle() == 2
    assert seen == ["first", "second"]
    for pk in (first, second):
        job = queue.get(pk)
        assert job is not None and (job.status, job.result, job.attempts) == ("done", "ok", 1)
    clock.advance(minutes=1)
    assert worker.run_until_idle() == 1
    assert seen[-1] == "later" and queue.get(later).status == JobStatus.DONE  # type: ignore[union-attr]
    assert [job.kind for job in queue.list(status=JobStatus.QUEUED)] == ["other-kind"]


def test_failures_back_off_then_park_and_retry_starts_afresh(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock)
    queue.retry_base_seconds = 10
    pk = queue.add(KIND, {}, max_attempts=3)
    worker = Worker(queue, failing("node down"))
    for attempt, delay in ((1, 10), (2, 20)):
        assert worker.run_until_idle() == 1
        job = queue.get(pk)
        assert job is not None
        assert (job.status, job.attempts, job.last_error) == ("queued", attempt, "node down")
        assert job.run_after == clock() + timedelta(seconds=delay)
        clock.advance(seconds=delay - 1)
        assert worker.run_until_idle() == 0  # not due yet
        clock.advance(seconds=1)
    assert worker.run_until_idle() == 1
    parked = queue.get(pk)
    assert parked is not None and (parked.status, parked.attempts) == ("parked", 3)
    clock.advance(hours=10)
    assert worker.run_until_idle() == 0  # parked stays parked
    assert [job.pk for job in queue.list(status=JobStatus.PARKED)] == [pk]

    assert queue.retry(pk) is True
    assert queue.retry(pk) is False  # only parked jobs go round again
    assert Worker(queue, {KIND: lambda job: f"attempt {job.attempts}"}).run_until_idle() == 1
    done = queue.get(pk)
    assert done is not None and (done.status, done.result, done.last_error) == (
        "done",
        "attempt 1",
        "",
    )


def test_permanent_failures_park_at_once_and_bugs_are_retried(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock)
    permanent = queue.add(KIND, {})
    assert Worker(queue, failing("study gone", permanent=True)).run_until_idle() == 1
    assert queue.get(permanent).status == JobStatus.PARKED  # type: ignore[union-attr]

    def buggy(job: ClaimedJob) -> str:
        raise KeyError("oops")

    buggy_pk = queue.add(KIND, {})
    assert Worker(queue, {KIND: buggy}).run_until_idle() == 1
    job = queue.get(buggy_pk)
    assert job is not None and (job.status, job.last_error) == ("queued", "KeyError: 'oops'")
    assert backoff(1) == timedelta(seconds=5) and backoff(30) == timedelta(hours=1)


def test_a_dead_workers_job_is_reclaimed_when_its_lease_runs_out(
    engine: Engine, clock: Clock
) -> None:
    dead, alive = JobQueue(engine, clock), JobQueue(engine, clock)
    pk = alive.add(KIND, {})
    claimed = dead.claim(frozenset({KIND}))
    assert claimed is not None and claimed.attempts == 1
    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert alive.claim(frozenset({KIND})) is None  # still leased
    assert dead.extend(claimed) is True  # a live worker keeps its lease
    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert alive.claim(frozenset({KIND})) is None
    clock.advance(seconds=2)
    again = alive.claim(frozenset({KIND}))
    assert again is not None and (again.pk, again.attempts) == (pk, 2)

    # The first worker wakes up late: it may neither renew nor close the job it lost.
    assert dead.extend(claimed) is False
    dead.fail(claimed, "late failure")
    dead.complete(claimed, "late result")
    job = alive.get(pk)
    assert job is not None and (job.status, job.locked_by) == ("running", alive.worker_id)
    alive.complete(again, "delivered")
    job = alive.get(pk)
    assert job is not None and (job.status, job.result) == ("done", "delivered")


def test_concurrent_workers_never_run_a_job_twice(
    tmp_path: Path, database_url: str, engine: Engine, clock: Clock
) -> None:
    jobs = 40
    queue = JobQueue(engine, clock)
    for n in range(jobs):
        queue.add(KIND, {"n": n})
    runs: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(3)

    def handler(job: ClaimedJob) -> str:
        with lock:
            runs[job.pk] += 1
        return "ok"

    settings = make_settings(tmp_path, database_url)
    engines = [create_database_engine(settings) for _ in range(3)]  # as three processes would
    results: list[int] = []

    def work(own: Engine) -> None:
        worker = Worker(JobQueue(own, clock), {KIND: handler})
        start.wait()
        while queue.list(status=JobStatus.QUEUED, limit=1):
            results.append(worker.run_until_idle())

    threads = [threading.Thread(target=work, args=(own,)) for own in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for own in engines:
            own.dispose()
    assert sorted(runs) == sorted(job.pk for job in queue.list())
    assert set(runs.values()) == {1}
    assert sum(results) == jobs
    assert {job.status for job in queue.list()} == {"done"}


def test_a_started_worker_runs_jobs_and_ticks_until_stopped(engine: Engine, clock: Clock) -> None:
    queue = JobQueue(engine, clock)
    done = threading.Event()
    ticks: list[int] = []
    worker = Worker(
        queue,
        {KIND: lambda job: done.set() or "ran"},
        idle_seconds=0.05,
        ticks=[lambda: ticks.append(1), lambda: 1 / 0],  # a failing tick stops nothing
    )
    worker.start()
    try:
        pk = queue.add(KIND, {})
        worker.wake()
        assert done.wait(30)
    finally:
        worker.stop()
    job = queue.get(pk)
    assert job is not None and job.result == "ran"
    assert ticks
