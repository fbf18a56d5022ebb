"""Administration: failed transfers and parked jobs (`/institutions/{code}/admin/jobs`).

The failed and partly delivered transfers from or to the institution, each with the actions its
viewer may use: "Retry" (the transfers API's `resend_transfer`: the delivery again to the same
destination, for those who may send for the sending institution) and "Mark as delivered"
(`mark_transfer_delivered`: an administrator of the sending institution records, with a reason,
that the studies arrived by other means). Then the parked jobs with a Retry button each: every
job for a system administrator, the jobs of the institution's own transfers and requests for
its administrators (`retry_job`). Each button is shown only when the decision the operation
makes allows it; posting anyway gets the operation's refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.delivered_by_hand import MARKABLE
from exchange.parties import allows
from exchange.sending import RESENDABLE
from foundation.errors import InvalidQuery
from policy.decision import Resource, decide
from policy.roles import Action
from portal.api_schemas import JobOut, JobQuery, RetryIn, TransferOut, TransferQuery
from portal.jobs_api import list_jobs, list_transfer_oversight, retry_job
from portal.pages.admin import admin_context, pk_of
from portal.pages.session import Place, Visitor, form_input, render, run_operation, signed_in
from portal.transfer_schemas import MarkDeliveredIn, ReasonIn
from portal.transfers_api import mark_transfer_delivered, resend_transfer

FAILED_TRANSFERS = ("failed", "partial")
SYSTEM = Resource.institution(0)  # a system administrator administers "institution 0"
TRANSFER_ID = re.compile(r"^[A-Za-z0-9_-]{8,32}$")


@dataclass(frozen=True)
class FailedTransfer:
    """A row of the failed transfers, with the actions this viewer may use on it."""

    transfer: TransferOut
    may_retry: bool
    may_mark_delivered: bool


def _row(visitor: Visitor, transfer: TransferOut) -> FailedTransfer:
    pks = (transfer.sender_institution_pk, transfer.destination_institution_pk)
    actor = visitor.actor
    return FailedTransfer(
        transfer,
        transfer.status in RESENDABLE and allows(actor, Action.TRANSFER, *pks, "sender"),
        transfer.status in MARKABLE and allows(actor, Action.ADMINISTER, *pks, "sender"),
    )


def sees_every_job(visitor: Visitor) -> bool:
    """A system administrator sees and retries every job (payloads carry any part's data)."""
    return decide(visitor.principal, Action.ADMINISTER, SYSTEM, visitor.actor.context).allowed


def sees_jobs_of(visitor: Visitor, place: Place) -> bool:
    """An administrator of the institution sees the jobs of its transfers and requests."""
    resource = Resource.job(frozenset({place.pk}))
    return decide(visitor.principal, Action.ADMINISTER, resource, visitor.actor.context).allowed


async def _parked(request: Request, visitor: Visitor, place: Place) -> list[JobOut] | None:
    """Every parked job for a system administrator, the institution's for its administrators;
    None for anyone else (the page then says who can retry)."""
    if sees_every_job(visitor):
        values = {"status": "parked"}
    elif sees_jobs_of(visitor, place):
        values = {"status": "parked", "institution": place.code}
    else:
        return None
    jobs: list[JobOut] = await run_operation(
        request, visitor, list_jobs, query=form_input(JobQuery, values)
    )
    return jobs


@signed_in
async def jobs_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    failed: list[TransferOut] = []
    for status in FAILED_TRANSFERS:
        query = form_input(TransferQuery, {"institution": place.code, "status": status})
        failed += await run_operation(request, visitor, list_transfer_oversight, query=query)
    failed.sort(key=lambda t: t.created_at, reverse=True)
    jobs = await _parked(request, visitor, place)
    context = admin_context(
        place,
        "jobs",
        visitor,
        transfers=[_row(visitor, t) for t in failed],
        jobs=jobs,
        every_job=sees_every_job(visitor),
    )
    return render(request, "admin/jobs.html", context, visitor=visitor, timezone=place.timezone)


def _back(place: Place, done: str) -> Response:
    return RedirectResponse(f"/institutions/{place.code}/admin/jobs?done={done}", 303)


@signed_in
async def retry(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"job_pk": pk_of(request.path_params["job_pk"], "job")}
    await run_operation(request, visitor, retry_job, path=path, body=RetryIn())
    return _back(place, "job-retried")


def _transfer_id(request: Request) -> dict[str, str]:
    text = request.path_params["transfer_id"]
    if not TRANSFER_ID.match(text):
        raise InvalidQuery("no such transfer")
    return {"transfer_id": text}


@signed_in
async def resend(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = _transfer_id(request)
    await run_operation(request, visitor, resend_transfer, path=path, body=ReasonIn())
    return _back(place, "transfer-resent")


@signed_in
async def mark_delivered(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = _transfer_id(request)
    body = form_input(MarkDeliveredIn, {"reason": visitor.form.get("reason", "")})
    await run_operation(request, visitor, mark_transfer_delivered, path=path, body=body)
    return _back(place, "transfer-marked-delivered")
