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
from portal.pages.session import Place, Visitor, form_input, render, run_operation, signed_in
from portal.request_schemas import RequestQuery
from portal.requests_api import list_requests
from portal.transfer_schemas import WorklistQueryIn
from portal.transfers_api import get_worklist, transfer_out

PAGE_SIZE = 20
VIEWS = ("worklist", "sent", "incoming", "outgoing")
REQUEST_VIEWS = ("incoming", "outgoing")
WORKLIST_FILTERS = ("status", "priority", "sender", "modality", "include_done", "sort", "order")
REQUEST_FILTERS = ("status", "urgency")
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
    resource = Resource.institution(place.pk)
    return decide(visitor.principal, Action.TRANSFER, resource, visitor.actor.context).allowed


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
        values = {**_kept(params, WORKLIST_FILTERS), "institution": place.code}
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


def _page_links(request: Request, total: int, offset: int, limit: int) -> dict[str, str]:
    params = dict(request.query_params)
    links = {}
    if offset > 0:
        links["previous"] = "?" + urlencode({**params, "offset": max(offset - limit, 0)})
    if offset + limit < total:
        links["next"] = "?" + urlencode({**params, "offset": offset + limit})
    return links


@signed_in
async def dashboard(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    views = allowed_views(visitor, place)
    if not views and may_administer(visitor, place):  # an administrator only: their pages
        return RedirectResponse(f"/institutions/{place.code}/admin", status_code=303)
    if not views and may_oversee(visitor, place):  # an auditor only: the oversight pages
        return RedirectResponse(f"/institutions/{place.code}/oversight", status_code=303)
    if not views:
        raise NotFound(f"no institution {place.code!r}")
    view = request.query_params.get("view") or views[0]
    if view not in views:
        raise NotFound("this list is not one you may see here")
    params = dict(request.query_params)
    found = await _load(request, visitor, place, view, params, PAGE_SIZE)
    tabs = []
    for each in views:  # counts without filters: what waits in each list
        counted = found if each == view and not _kept(params, FILTERS) else None
        counted = counted or await _load(request, visitor, place, each, {}, 1)
        tabs.append(Tab(each, TAB_LABELS[each], counted.total))
    total, items, offset = found.total, found.items, found.offset
    context = {
        "place": place,
        "tabs": tabs,
        "view": view,
        "items": items,
        "total": total,
        "offset": offset,
        "limit": PAGE_SIZE,
        "pages": _page_links(request, total, offset, PAGE_SIZE),
        "filters": params,
        "statuses": [s.value for s in (RequestStatus if view in REQUEST_VIEWS else TransferStatus)],
        "may_request": "outgoing" in views,
        "may_send": may_send(visitor, place),
        "may_administer": may_administer(visitor, place),
        "may_oversee": may_oversee(visitor, place),
    }
    partial = request.headers.get("hx-request") and request.headers.get("hx-target") == "results"
    template = "dashboard/_results.html" if partial else "dashboard/index.html"
    return render(request, template, context, visitor=visitor, timezone=place.timezone)


TAB_LABELS = {
    "worklist": "Worklist",
    "sent": "Sent",
    "incoming": "Requests to us",
    "outgoing": "Our requests",
}
