"""An institution's dashboard (`/institutions/{code}`): its worklist of incoming studies, the
transfers it sent, and the requests it was asked and made; each with counts, filters, sorting
and paging kept in the URL (never patient data), urgent first.

Each list is the JSON API's own operation run for the person (`run_operation`), so the
policy's decisions and the visibility scope are exactly the API's; a tab the person may not
use is not shown, and an institution they do not belong to is a 404 like one that does not
exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.models import Transfer, TransferStatus
from exchange.request_models import RequestStatus
from foundation.errors import NotFound
from policy.decision import Resource, decide
from policy.roles import Action
from policy.store import snapshot
from portal.openapi import Call
from portal.pages.admin import may_administer, may_oversee
from portal.pages.session import (
    Place,
    Visitor,
    decide_on_place,
    form_input,
    render,
    run_operation,
    signed_in,
)
from portal.request_schemas import RequestQuery
from portal.requests_api import list_requests
from portal.transfer_schemas import WorklistQueryIn
from portal.transfers_api import get_worklist, transfer_out

PAGE_SIZE = 20
VIEWS = ("worklist", "sent", "incoming", "outgoing")
REQUEST_VIEWS = ("incoming", "outgoing")
WORKLIST_FILTERS = ("status", "priority", "sender", "modality", "include_done", "sort", "order")
REQUEST_FILTERS = ("status", "urgency")
PATIENT_FILTERS = ("patient_id", "patient_name", "accession")  # posted, never in a URL
PATIENT_LIMIT = 100
FILTERS = (*WORKLIST_FILTERS, *REQUEST_FILTERS, "offset")


@dataclass(frozen=True)
class Tab:
    view: str
    label: str
    count: int


def allowed_views(visitor: Visitor, place: Place) -> list[str]:
    """Which lists the person may see here, each decided as the API decides it."""
    principal, context = visitor.principal, visitor.actor.context
    here = place.pk
    checks = {
        "worklist": (Action.SEARCH, Resource.transfer(here, here)),
        "sent": (Action.SEARCH, Resource.transfer(here, here)),
        "incoming": (Action.ANSWER, Resource.request(0, here)),
        "outgoing": (Action.REQUEST, Resource.request(here, 0)),
    }
    return [v for v, (a, r) in checks.items() if decide(principal, a, r, context).allowed]


def may_send(visitor: Visitor, place: Place) -> bool:
    """Whether the "Send studies" page is offered: the decision `create_transfer` makes."""
    return decide_on_place(visitor.principal, Action.TRANSFER, place, visitor.actor.context).allowed


Params = dict[str, str]


def _kept(params: Params, names: tuple[str, ...]) -> Params:
    return {n: params[n] for n in names if params.get(n)}


def _offset(params: Params) -> int:
    text = params.get("offset", "0")
    return int(text) if text.isdecimal() and int(text) < 1_000_000 else 0


def _sent(call: Call, place: Place, status: str, offset: int, limit: int) -> tuple[int, list[Any]]:
    """The transfers the institution sent (drafts too: they are its own), newest first."""
    conditions = [col(Transfer.sender_institution_pk) == place.pk]
    if status:
        conditions.append(col(Transfer.status) == status)
    engine = call.state.archive.engine
    with Session(engine, expire_on_commit=False) as session:
        total = session.exec(select(func.count()).select_from(Transfer).where(*conditions)).one()
        rows = list(
            session.exec(
                select(Transfer).where(*conditions).order_by(col(Transfer.pk).desc())
                .offset(offset).limit(limit)
            )
        )  # fmt: skip
    policy = snapshot(engine)
    return int(total), [transfer_out(call, row, policy) for row in rows]


@dataclass(frozen=True)
class Found:
    total: int
    offset: int
    items: list[Any]


async def _load(
    request: Request, visitor: Visitor, place: Place, view: str, params: Params, limit: int
) -> Found:
    offset = _offset(params)
    if view == "worklist":
        values = {**_kept(params, (*WORKLIST_FILTERS, *PATIENT_FILTERS)), "institution": place.code}
        query = form_input(WorklistQueryIn, {**values, "offset": offset, "limit": limit})
        page = await run_operation(request, visitor, get_worklist, query=query)
        return Found(page.total, offset, page.items)
    if view == "sent":
        status = params.get("status", "")
        if status and status not in {s.value for s in TransferStatus}:
            status = "-"  # matches nothing, like the API's filter
        call = Call(request, visitor.principal, {}, None, None, now=visitor.now)
        total, items = await anyio.to_thread.run_sync(_sent, call, place, status, offset, limit)
        return Found(total, offset, items)
    values = {**_kept(params, REQUEST_FILTERS), "institution": place.code, "direction": view}
    asked = form_input(RequestQuery, {**values, "offset": offset, "limit": limit})
    requests = await run_operation(request, visitor, list_requests, query=asked)
    return Found(requests.total, offset, requests.items)


async def institution_tabs(
    request: Request,
    visitor: Visitor,
    place: Place,
    views: list[str],
    known: dict[str, Found | None] | None = None,
) -> list[Tab]:
    """The institution's lists with their counts without filters: what waits in each."""
    tabs = []
    for view in views:
        counted = (known or {}).get(view) or await _load(request, visitor, place, view, {}, 1)
        tabs.append(Tab(view, TAB_LABELS[view], counted.total))
    return tabs


def _page_links(request: Request, total: int, offset: int, limit: int) -> dict[str, str]:
    params = dict(request.query_params)
    links = {}
    if offset > 0:
        links["previous"] = "?" + urlencode({**params, "offset": max(offset - limit, 0)})
    if offset + limit < total:
        links["next"] = "?" + urlencode({**params, "offset": offset + limit})
    return links


async def _dashboard(request: Request, visitor: Visitor, patient: Params | None = None) -> Response:
    place = visitor.place(request.path_params["code"])
    views = allowed_views(visitor, place)
    if not views and may_administer(visitor, place):  # an administrator only: their pages
        return RedirectResponse(f"/institutions/{place.code}/admin", status_code=303)
    if not views and may_oversee(visitor, place):  # an auditor only: the oversight pages
        return RedirectResponse(f"/institutions/{place.code}/oversight", status_code=303)
    if not views:
        raise NotFound(f"no institution {place.code!r}")
    view = "worklist" if patient else request.query_params.get("view") or views[0]
    if view not in views:
        raise NotFound("this list is not one you may see here")
    params = {**request.query_params, **(patient or {})}
    limit = PATIENT_LIMIT if patient else PAGE_SIZE
    found = await _load(request, visitor, place, view, params, limit)
    unfiltered = None if _kept(params, FILTERS) or patient else found
    tabs = await institution_tabs(request, visitor, place, views, {view: unfiltered})
    context = {
        "place": place,
        "tabs": tabs,
        "view": view,
        "items": found.items,
        "total": found.total,
        "offset": found.offset,
        "limit": limit,
        "pages": {} if patient else _page_links(request, found.total, found.offset, limit),
        "filters": params,
        "patient": patient or {},
        "statuses": [s.value for s in (RequestStatus if view in REQUEST_VIEWS else TransferStatus)],
        "may_request": "outgoing" in views,
        "may_send": may_send(visitor, place),
        "may_administer": may_administer(visitor, place),
        "may_oversee": may_oversee(visitor, place),
    }
    partial = request.headers.get("hx-request") and request.headers.get("hx-target") == "results"
    template = "dashboard/_results.html" if partial else "dashboard/index.html"
    return render(request, template, context, visitor=visitor, timezone=place.timezone)


@signed_in
async def dashboard(request: Request, visitor: Visitor) -> Response:
    return await _dashboard(request, visitor)


@signed_in
async def find_patient(request: Request, visitor: Visitor) -> Response:
    """The worklist narrowed to one patient or accession: posted, so the patient's data stays
    out of the address bar, the history and the logs of every proxy on the way."""
    patient = {name: visitor.form.get(name, "").strip() for name in PATIENT_FILTERS}
    patient = {name: value for name, value in patient.items() if value}
    if not patient:
        return RedirectResponse(f"/institutions/{request.path_params['code']}", 303)
    return await _dashboard(request, visitor, patient)


TAB_LABELS = {
    "worklist": "Worklist",
    "sent": "Sent",
    "incoming": "Requests to us",
    "outgoing": "Our requests",
}
