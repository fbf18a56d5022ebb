"""Concurrent appenders (threads and processes) never fork or break the chain."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import Engine, func, select

from audit import AuditEvent, AuditRecord, Outcome, record, record_many
from audit.verify import verify_chain

THREADS, PER_THREAD, PROCESSES = 4, 40, 2
COUNTS = (str(THREADS), str(PER_THREAD))
ROOT = Path(__file__).resolve().parents[2]

# A separate interpreter with its own engine and pool: 4 threads appending once told to go.
WRITER = """
import sys, threading
from audit import AuditRecord, record
from ferry.database import create_database_engine
from ferry.settings import Settings

url, tag, threads, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
engine = create_database_engine(Settings(database_url=url))

def write(thread):
    for number in range(count):
        record(engine, AuditRecord(
            action="store", outcome="allowed", actor=f"{tag}-{thread}", transaction=str(number)))

workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
print("ready", flush=True)
sys.stdin.readline()
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
engine.dispose()
"""


def write_from_threads(engine: Engine, tag: str, go: threading.Event) -> list[threading.Thread]:
    def write(thread: int) -> None:
        go.wait()
        for number in range(PER_THREAD):
            event = AuditRecord(
                action="read-pixels", outcome=Outcome.ALLOWED, actor=f"{tag}-{thread}"
            )
            if number % 10 == 9:
                record_many(engine, [event, event])
            else:
                record(engine, event)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    return workers


def test_threads_and_processes_append_one_unbroken_chain(engine, settings):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, settings.database_url, f"process{n}", *COUNTS],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    go = threading.Event()
    workers = write_from_threads(engine, "thread", go)
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    go.set()
    for worker in workers:
        worker.join()
    for process in processes:
        assert process.wait(timeout=120) == 0

    in_this_process = THREADS * (PER_THREAD + PER_THREAD // 10)  # every tenth append is a pair
    expected = in_this_process + PROCESSES * THREADS * PER_THREAD
    report = verify_chain(engine)
    assert report.intact, report.describe()
    assert report.checked == expected
    with engine.connect() as connection:
        table = AuditEvent.__table__
        pks = connection.execute(select(func.min(table.c.pk), func.max(table.c.pk))).one()
        per_actor = dict(
            connection.execute(select(table.c.actor, func.count()).group_by(table.c.actor)).all()
        )
    assert tuple(pks) == (1, expected)
    assert per_actor[f"process1-{THREADS - 1}"] == PER_THREAD
    assert per_actor["thread-0"] == PER_THREAD + PER_THREAD // 10
