"""The admin JSON API, part three: the job queue and transfers, where failed deliveries surface.

Jobs carry payloads any part of Ferry may write: a system administrator sees and retries every
job; an institution's administrator only the jobs serving its own transfers and requests
(`exchange.job_owners`, decided by `policy.decide` on `Resource.job`), with the payload cut to
what names the work. A job one may not see answers like a missing one (404). Transfers are
shown to the administrators of their sending or receiving institution.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from exchange import transfers
from exchange.job_owners import jobs_of, owners_of
from exchange.models import Transfer
from foundation.errors import NotFound
from foundation.jobs import Job, JobQueue
from policy.decision import Resource
from portal.admin_access import Access
from portal.api_schemas import JobOut, JobQuery, RetryIn, TransferOut, TransferQuery
from portal.openapi import Call, Operation

DEFAULT_LIMIT = 200


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


# --- jobs -----------------------------------------------------------------------------------


# What an institution's administrator sees of a payload: the work, never who asked for it.
SHOWN_TO_INSTITUTIONS = ("study_uid", "node_pk", "transfer_pk", "transfer", "request", "as_sent")


def _job_out(job: Job, whole: bool = True) -> JobOut:
    values: dict[str, Any] = job.model_dump()
    payload: dict[str, Any] = orjson.loads(job.payload or "{}")
    if not whole:
        payload = {k: v for k, v in payload.items() if k in SHOWN_TO_INSTITUTIONS}
    values["payload"] = payload
    return JobOut.model_validate(values)


def _job_scope(access: Access, code: str | None) -> frozenset[int] | None:
    """None: every job (a system administrator's whole queue); else the institutions whose
    jobs the principal may see: the one named (403/404 like any institution), else all."""
    if code is None and access.is_system().allowed:
        return None
    pks = [access.require_code(code).pk] if code else list(access.snapshot.institutions)
    mine = frozenset(pk for pk in pks if access.decide_on(Resource.job(frozenset({pk}))).allowed)
    if not mine:
        decision = access.decide_on(Resource.job(frozenset(pks)))
        access.audit(decision, pks[0] if code else None)
        raise HTTPException(
            403,
            "only administrators see jobs: a system administrator all, "
            "an institution's administrator those of its transfers and requests",
        )
    return mine


def list_jobs(call: Call) -> list[JobOut]:
    access = Access(call)
    query: JobQuery = call.query
    status = query.status.value if query.status else None
    scope = _job_scope(access, query.institution)
    if scope is None:
        jobs = JobQueue(_engine(call)).list(status, query.kind, query.limit)
    else:
        jobs = jobs_of(_engine(call), scope, status, query.kind, query.limit)
    whole = access.is_system().allowed
    return [_job_out(job, whole) for job in jobs]


def retry_job(call: Call) -> JobOut:
    access = Access(call)
    pk = call.path["job_pk"]
    queue = JobQueue(_engine(call))
    job = queue.get(pk)
    owners = owners_of(_engine(call), job) if job is not None else frozenset()
    decision = access.decide_on(Resource.job(owners))
    access.audit(decision, min(owners, default=None), job=pk)
    if job is None or not decision.allowed:
        raise NotFound(f"no job {pk}")  # one you may not see is one that is not there
    body: RetryIn = call.body
    retried = queue.retry(pk, {"as_sent": True} if body.as_sent else None)
    job = queue.get(pk)
    assert job is not None
    if not retried:
        raise HTTPException(409, f"job {pk} is {job.status}; only parked jobs are retried")
    return _job_out(job, access.is_system().allowed)


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
    Operation("GET", "/jobs", list_jobs,
              "the job queue, newest first (system); an institution's administrator: the jobs "
              "of its transfers and requests", _J, response=list[JobOut], query=JobQuery),
    Operation("POST", "/jobs/{job_pk}/retry", retry_job,
              "send a parked job round again, attempts counted afresh (system, or an "
              "administrator of the job's institution)", _J, RetryIn, JobOut),
    Operation("GET", "/oversight/transfers", list_transfer_oversight,
              "transfers from or to institutions you administer, newest first", _T,
              response=list[TransferOut], query=TransferQuery),
]  # fmt: skip
