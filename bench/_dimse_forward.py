"""Ferry's forwarding rate: stored studies C-STOREd to a storescp node by forwarding jobs.

One job per study (`dimse.forward.enqueue_forward`), run by the job worker of `ferry serve`, or of
a process of ours when none is claimed within `CLAIM_GRACE_S` (FERRY_JOBS_ENABLED=false). The rate
counts from the first job claimed to the last done, read from the `job` table every `POLL_S`: the
worker's pick-up delay (it polls once a second when idle) is not forwarding time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text

from _dimse_ferry import FerryDimse
from _dimse_ingest import InstanceSet, StoreFailed
from _dimse_peers import StoreSCP
from _progress import log
from _report import HIGHER, Figure, Report

POLL_S = 0.01
CLAIM_GRACE_S = 5.0
FORWARD_TIMEOUT_S = 1800.0
FINISHED = {"done", "parked"}
INGEST_KEY = "ingest.a1.rate"  # the forwarding rate is judged against 1-association ingest


@dataclass(frozen=True)
class JobState:
    pk: int
    status: str
    attempts: int
    last_error: str
    result: str


@dataclass(frozen=True)
class Forwarded:
    jobs: tuple[JobState, ...]
    seconds: float  # first claim to last done
    enqueued_to_done: float


def measure_forwarding(
    ferry: FerryDimse, destination: StoreSCP, instances: InstanceSet, report: Report
) -> list[Figure]:
    ferry.add_node(destination.ae_title, destination.port, query=False, write=True)
    destination.clear()
    answer = ferry.run_process("enqueue-forward", destination.ae_title, *instances.study_uids)
    jobs = [int(line) for line in answer.split()]
    log(f"ferry: forwarding jobs {jobs} queued, {len(instances.study_uids)} studies")
    forwarded = watch_jobs(ferry, jobs)
    failed = [job for job in forwarded.jobs if job.status != "done" or job.attempts != 1]
    if failed:
        raise StoreFailed(
            "; ".join(
                f"job {j.pk} {j.status} after {j.attempts} attempts: {j.last_error}" for j in failed
            )
        )
    received, payload = destination.received()
    if received != instances.count:
        raise StoreFailed(f"storescp received {received} of {instances.count} instances")
    return forwarding_figures(instances, forwarded, payload, destination, report)


def watch_jobs(ferry: FerryDimse, jobs: Sequence[int]) -> Forwarded:
    """Poll the jobs until all have finished; starts our worker if none is claimed in time."""
    query = text(
        "SELECT pk, status, attempts, last_error, result FROM job WHERE pk IN :pks"
    ).bindparams(bindparam("pks", expanding=True))
    enqueued = time.perf_counter()
    claimed: float | None = None
    while True:
        with ferry.engine.connect() as connection:
            states = [JobState(*row) for row in connection.execute(query, {"pks": list(jobs)})]
        now = time.perf_counter()
        if claimed is None and any(state.status != "queued" for state in states):
            claimed = now
        if states and all(state.status in FINISHED for state in states):
            start = claimed if claimed is not None else now
            return Forwarded(tuple(states), now - start, now - enqueued)
        if claimed is None and now - enqueued > CLAIM_GRACE_S and not ferry.worker_in:
            log("ferry: no forwarding job claimed by `ferry serve`; starting a job worker")
            ferry.start_worker()
        if now - enqueued > FORWARD_TIMEOUT_S:
            raise StoreFailed(f"forwarding not finished after {FORWARD_TIMEOUT_S:.0f} s: {states}")
        time.sleep(POLL_S)


def forwarding_figures(
    instances: InstanceSet,
    forwarded: Forwarded,
    payload: int,
    destination: StoreSCP,
    report: Report,
) -> list[Figure]:
    span = destination.received_times()
    raw = {
        "instances": instances.count,
        "studies": len(instances.study_uids),
        "received_bytes": payload,
        "seconds": round(forwarded.seconds, 4),
        "enqueued_to_done_seconds": round(forwarded.enqueued_to_done, 4),
        "first_to_last_file_seconds": round(span[1] - span[0], 4) if span else None,
        "jobs": [job.__dict__ for job in forwarded.jobs],
    }
    rate = instances.count / forwarded.seconds
    label = f"Forwarding to storescp, {len(instances.study_uids)} study jobs"
    figures = [
        Figure("forward", "forward.rate", label, "instances/s", HIGHER, rate, raw),
        Figure(
            "forward", "forward.throughput", label, "MB/s", HIGHER,
            payload / forwarded.seconds / 1e6, raw,
        ),
    ]  # fmt: skip
    row = report.rows.get(INGEST_KEY)
    ingest = row.values.get("ferry") if row else None
    if ingest:
        figures.append(
            Figure(
                "forward", "forward.fraction", "… as % of Ferry's 1-association ingest", "%",
                HIGHER, 100 * rate / ingest, {"ingest_rate": ingest},
            )
        )  # fmt: skip
    return figures
