"""The admin JSON API, part three: the job queue and transfers, where failed deliveries surface.

Jobs carry payloads any part of Ferry may write, so only system administrators see or retry
them; transfers are shown to the administrators of their sending or receiving institution.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from exchange import transfers
from exchange.models import Transfer
from foundation.errors import NotFound
from foundation.jobs import Job, JobQueue
from portal.admin_access import Access
from portal.api_schemas import JobOut, JobQuery, RetryIn, TransferOut, TransferQuery
from portal.openapi import Call, Operation

DEFAULT_LIMIT = 200


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


# --- jobs -----------------------------------------------------------------------------------


def _job_out(job: Job) -> JobOut:
    values: dict[str, Any] = job.model_dump()
    values["payload"] = orjson.loads(job.payload or "{}")
    return JobOut.model_validate(values)


def list_jobs(call: Call) -> list[JobOut]:
    Access(call).require_system()
    query: JobQuery = call.query
    status = query.status.value if query.status else None
    jobs = JobQueue(_engine(call)).list(status, query.kind, query.limit)
    return [_job_out(job) for job in jobs]


def retry_job(call: Call) -> JobOut:
    Access(call).require_system()
    pk = call.path["job_pk"]
    queue = JobQueue(_engine(call))
    body: RetryIn = call.body
    retried = queue.retry(pk, {"as_sent": True} if body.as_sent else None)
    job = queue.get(pk)
    if job is None:
        raise NotFound(f"no job {pk}")
    if not retried:
        raise HTTPException(409, f"job {pk} is {job.status}; only parked jobs are retried")
    return _job_out(job)


# --- transfers ------------------------------------------------------------------------------


def _transfer_out(access: Access, transfer: Transfer) -> TransferOut:
    values: dict[str, Any] = transfer.model_dump()
    values["sender"] = access.code_of(transfer.sender_institution_pk)
    values["destination"] = access.code_of(transfer.destination_institution_pk)
    return TransferOut.model_validate(values)


def list_transfer_oversight(call: Call) -> list[TransferOut]:
    """One institution's (refused with 403/404 like the rest), else all one administers."""
    access = Access(call)
    query: TransferQuery = call.query
    scope = access.oversight_scope(query.institution)
    status = query.status.value if query.status else None
    rows = transfers.list_transfers(_engine(call), scope, status, query.limit)
    return [_transfer_out(access, row) for row in rows]


_J = "jobs"
_T = "transfers"
OPERATIONS: list[Operation] = [
    Operation("GET", "/jobs", list_jobs, "the job queue, newest first (system)", _J,
              response=list[JobOut], query=JobQuery),
    Operation("POST", "/jobs/{job_pk}/retry", retry_job,
              "send a parked job round again, attempts counted afresh (system)", _J, RetryIn,
              JobOut),
    Operation("GET", "/oversight/transfers", list_transfer_oversight,
              "transfers from or to institutions you administer, newest first", _T,
              response=list[TransferOut], query=TransferQuery),
]  # fmt: skip
