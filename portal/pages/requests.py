"""Asking another institution for imaging, and answering: `/institutions/{code}/requests/new`
(what a request-only person sees first) and `/requests/{id}`.

The request page shows the patient as the requester knows them first, what is wanted, and the
history. The asked institution's people search with the request's own identifiers, pre-filled
(Patient ID, or name and birth date; accession numbers; dates; modalities), in Ferry's archive
or on one of their nodes, compare each match's patient with the request's, pick and answer;
or answer that nothing was found, or reject with a reason. The requester may cancel while
nobody has answered. Each step is the JSON API's own operation, decided and audited as there;
a request the person is no party to is a 404 like a missing one. The search and its matches
are posted, never put in a URL: they carry patient data.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.request_models import PENDING, RequestStatus
from foundation.errors import FerryError, NotFound
from policy import store
from policy.decision import Resource, decide
from policy.roles import Action
from portal.pages.dashboard import allowed_views, institution_tabs
from portal.pages.session import (
    Place,
    Visitor,
    form_input,
    form_list,
    render,
    run_operation,
    signed_in,
)
from portal.request_schemas import AnswerIn, ReasonIn, RejectIn, RequestIn, RequestOut, SearchIn
from portal.requests_api import (
    PARAMETERS,
    answer_nothing_found,
    answer_request,
    cancel_request,
    create_request,
    get_request,
    reject_request,
    search_for_request,
)

_SPLIT = re.compile(r"[\s,;]+")


def _dicom_date(text: str) -> str:
    """`2024-01-15` (an HTML date field) as `20240115`; empty stays empty."""
    return text.strip().replace("-", "")


def _words(text: str) -> list[str]:
    return [word for word in _SPLIT.split(text.strip()) if word]


def request_body(place: Place, form: dict[str, str]) -> dict[str, Any]:
    """The form's fields as the API's RequestIn, before validation."""
    family, given = form.get("family_name", "").strip(), form.get("given_name", "").strip()
    return {
        "institution": place.code,
        "asked": form.get("asked", ""),
        "node": form.get("node") or None,
        "patient": {
            "id": form.get("patient_id", "").strip(),
            "issuer": form.get("issuer", "").strip(),
            "name": f"{family}^{given}" if given else family,
            "birth_date": _dicom_date(form.get("birth_date", "")),
            "sex": form.get("sex", ""),
        },
        "accession_numbers": _words(form.get("accession_numbers", "")),
        "study_date_from": _dicom_date(form.get("study_date_from", "")),
        "study_date_to": _dicom_date(form.get("study_date_to", "")),
        "modalities": [m.upper() for m in _words(form.get("modalities", ""))],
        "body_part": form.get("body_part", "").strip(),
        "details": form.get("details", ""),
        "reason": form.get("reason", ""),
        "urgency": form.get("urgency", "routine"),
    }


def _may_request(visitor: Visitor, place: Place) -> bool:
    resource = Resource.request(place.pk, 0)
    context = visitor.actor.context
    return decide(visitor.principal, Action.REQUEST, resource, context).allowed


def _choices(request: Request, place: Place) -> tuple[list[Any], list[str]]:
    """Institutions one may ask (any other, by name), and the place's own nodes to receive on."""
    engine = request.app.state.archive.engine
    others = [i for i in store.list_institutions(engine) if i.pk != place.pk]
    nodes = [n.ae_title for n in store.list_nodes(engine, [place.pk]) if n.can_write]
    return sorted(others, key=lambda i: i.name.lower()), nodes


async def _new_form(
    request: Request, visitor: Visitor, place: Place, error: str = "", status: int = 200
) -> Response:
    others, nodes = await anyio.to_thread.run_sync(_choices, request, place)
    views = allowed_views(visitor, place)
    context = {
        "place": place,
        "institutions": others,
        "nodes": nodes,
        "error": error,
        "values": dict(visitor.form),
        "view": "new-request",
        "tabs": await institution_tabs(request, visitor, place, views),
        "may_request": True,
    }
    return render(request, "requests/new.html", context, visitor=visitor,
                  timezone=place.timezone, status=status)  # fmt: skip


@signed_in
async def new_request(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    if not _may_request(visitor, place):
        raise NotFound("you do not ask for imaging here")
    return await _new_form(request, visitor, place)


@signed_in
async def create(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    if not _may_request(visitor, place):
        raise NotFound("you do not ask for imaging here")
    try:
        body = form_input(RequestIn, request_body(place, dict(visitor.form)))
        made: RequestOut = await run_operation(request, visitor, create_request, body=body)
    except FerryError as error:
        return await _new_form(request, visitor, place, str(error), 400)
    return RedirectResponse(f"/requests/{made.id}?done=requested", status_code=303)


# --- one request ---------------------------------------------------------------------------


def _path(request: Request) -> dict[str, str]:
    text = request.path_params["request_id"]
    try:
        return {"request_id": PARAMETERS["request_id"].parse(text)}
    except ValueError:
        raise NotFound(f"no request {text[:40]!r}") from None


def _sources(request: Request, shown: RequestOut) -> list[str]:
    """Where the asked institution may search: Ferry, and its nodes that answer C-FIND."""
    engine = request.app.state.archive.engine
    asked = store.find_institution(engine, shown.asked)
    return [n.ae_title for n in store.list_nodes(engine, [asked.pk or 0]) if n.ae_title]


async def _show(
    request: Request,
    visitor: Visitor,
    shown: RequestOut,
    *,
    search: Any = None,
    error: str = "",
    status: int = 200,
) -> Response:
    pending = RequestStatus(shown.status) in PENDING
    answering = shown.side == "answerer" and pending
    nodes = await anyio.to_thread.run_sync(_sources, request, shown) if answering else []
    code = shown.asked if shown.side == "answerer" else shown.institution
    place = next((p for p in visitor.places if p.code == code), None)
    context = {
        "r": shown,
        "answering": answering,
        "cancelling": shown.side == "requester" and pending,
        "nodes": nodes,
        "search": search,
        "error": error,
        "place": place,
    }
    zone = place.timezone if place else visitor.timezone
    return render(request, "requests/show.html", context, visitor=visitor, timezone=zone,
                  status=status)  # fmt: skip


@signed_in
async def request_page(request: Request, visitor: Visitor) -> Response:
    shown = await run_operation(request, visitor, get_request, path=_path(request))
    return await _show(request, visitor, shown)


@signed_in
async def search(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(SearchIn, {"node": visitor.form.get("source") or None})
    found = await run_operation(request, visitor, search_for_request, path=path, body=body)
    shown = await run_operation(request, visitor, get_request, path=path)
    return await _show(request, visitor, shown, search=found)


@signed_in
async def answer(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    node = visitor.form.get("source") or None
    picks = [{"study_uid": uid, "node": node} for uid in form_list(request, "study")]
    try:
        body = form_input(AnswerIn, {"studies": picks})
    except FerryError:
        shown = await run_operation(request, visitor, get_request, path=path)
        message = "Pick at least one study, or answer that nothing was found."
        return await _show(request, visitor, shown, error=message, status=400)
    await run_operation(request, visitor, answer_request, path=path, body=body)
    return RedirectResponse(f"/requests/{path['request_id']}?done=answered", status_code=303)


@signed_in
async def nothing_found(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(ReasonIn, {"reason": visitor.form.get("reason", "").strip()})
    await run_operation(request, visitor, answer_nothing_found, path=path, body=body)
    return RedirectResponse(f"/requests/{path['request_id']}?done=nothing-found", 303)


@signed_in
async def reject(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(RejectIn, {"reason": visitor.form.get("reason", "").strip()})
    await run_operation(request, visitor, reject_request, path=path, body=body)
    return RedirectResponse(f"/requests/{path['request_id']}?done=rejected", status_code=303)


@signed_in
async def cancel(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(ReasonIn, {"reason": visitor.form.get("reason", "").strip()})
    await run_operation(request, visitor, cancel_request, path=path, body=body)
    return RedirectResponse(f"/requests/{path['request_id']}?done=cancelled", status_code=303)
