"""Sending studies (`/institutions/{code}/send`): the "create a transfer" workflow for people.

The person picks studies of the institution's archive or of one of its PACS nodes (a search by
patient or accession, posted so that patient data stays out of URLs; studies on a node are
fetched into the transfer by a job, which sends it when they are in), or uploads them from the
desktop or a CD (a folder or files: `portal/static/upload.js` skips what is not DICOM, creates a
draft transfer through the JSON API and stores the files into it with STOW-RS in batches); then
chooses a destination among those the rules allow now (the ones left out are listed with their
reason), the priority and a note, and sends.

Everything runs through the JSON API's own operations (`get_destinations`, `create_transfer`,
`get_transfer`, `send_transfer`, `cancel_transfer`), so the decisions, the refusals and the audit
trail are the API's. A person who may not send for the institution gets the API's refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.request_search import find_studies
from foundation.errors import InvalidQuery
from policy import store
from portal.node_transfers_api import add_studies_from_node, search_node
from portal.pages.session import (
    Place,
    Visitor,
    form_input,
    form_list,
    render,
    run_operation,
    signed_in,
)
from portal.pages.transfers import _path as transfer_path
from portal.profiles_api import list_institution_profiles
from portal.request_schemas import SearchOut
from portal.transfer_schemas import (
    DestinationsQuery,
    NodeSearchIn,
    NodeStudiesIn,
    ReasonIn,
    TransferIn,
    TransferOut,
)
from portal.transfers_api import (
    cancel_transfer,
    create_transfer,
    get_destinations,
    get_transfer,
    send_transfer,
)

SEARCH_FIELDS = ("patient_id", "patient_name", "accession")
MAX_FIELD = 64


@dataclass(frozen=True)
class PatientGroup:
    """The studies of one patient in a draft, so the person checks who they are sending."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    studies: tuple[int, ...]  # indexes into the transfer's studies


def _search_keys(params: Mapping[str, str]) -> list[dict[str, str]]:
    """The archive search a person typed: exact Patient ID or accession, a name prefix."""
    keys: dict[str, str] = {}
    for name in SEARCH_FIELDS:
        value = params.get(name, "").strip()
        if len(value) > MAX_FIELD or any(c in value for c in "\\*?"):
            raise InvalidQuery(f"{name.replace('_', ' ')}: at most {MAX_FIELD} plain characters")
        if value:
            keyword = {"patient_id": "PatientID", "accession": "AccessionNumber"}.get(name)
            if keyword:
                keys[keyword] = value
            else:
                keys["PatientName"] = value + "*"
    return [keys] if keys else []


def _queryable_nodes(request: Request, place: Place) -> list[str]:
    """The institution's nodes Ferry may query (C-FIND, then fetch): the node source's choices."""
    nodes = store.list_nodes(request.app.state.archive.engine, [place.pk])
    return sorted(node.ae_title for node in nodes if node.can_query)


async def _page(
    request: Request, visitor: Visitor, place: Place, search: Mapping[str, str] | None = None
) -> Response:
    # The destinations first: a person who may not send for this institution is refused here.
    query = DestinationsQuery(institution=place.code)
    destinations = await run_operation(request, visitor, get_destinations, query=query)
    nodes = await anyio.to_thread.run_sync(_queryable_nodes, request, place)
    params = {name: (search or {}).get(name, "") for name in (*SEARCH_FIELDS, "source")}
    found: list[Any] = []
    searched = search is not None
    if searched:
        keys = _search_keys(params)
        source = params["source"]
        if source and source not in nodes:
            raise InvalidQuery("choose one of our nodes, or our archive")
        if source:
            body = NodeSearchIn(institution=place.code, node=source, keys=keys[0] if keys else {})
            answer: SearchOut = await run_operation(request, visitor, search_node, body=body)
            found = list(answer.matches)
        elif keys:
            engine = request.app.state.archive.engine
            found = await anyio.to_thread.run_sync(
                find_studies, engine, visitor.actor, place.pk, keys
            )
    profiles = await run_operation(
        request, visitor, list_institution_profiles, path={"code": place.code}
    )
    context = {
        "place": place,
        "destinations": destinations,
        "profiles": profiles,
        "nodes": nodes,
        "search": params,
        "searched": searched,
        "found": found,
    }
    return render(request, "transfers/new.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def send_page(request: Request, visitor: Visitor) -> Response:
    return await _page(request, visitor, visitor.place(request.path_params["code"]))


@signed_in
async def search_studies(request: Request, visitor: Visitor) -> Response:
    """The search of step 1, posted so that patient data stays out of URLs and logs."""
    place = visitor.place(request.path_params["code"])
    return await _page(request, visitor, place, visitor.form)


def _transfer_input(
    place: Place, form: Mapping[str, str], studies: list[str], *, send: bool
) -> TransferIn:
    institution, _, node = form.get("destination", "").partition(":")
    values = {
        "institution": place.code,
        "destination": institution,
        "node": node or None,
        "studies": studies,
        "priority": form.get("priority", "routine"),
        "note": form.get("note", ""),
        "send": send,
        "profile": form.get("profile") or None,
    }
    return form_input(TransferIn, values)


@signed_in
async def send_studies(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    studies = form_list(request, "study")
    on_node = form_list(request, "node_study")
    node = visitor.form.get("node", "")
    if not studies and not on_node:
        raise InvalidQuery("choose at least one study to send")
    if not visitor.form.get("destination"):
        raise InvalidQuery("choose a destination")
    if on_node and not node:
        raise InvalidQuery("the studies picked on a node need that node's name")
    if on_node and visitor.form.get("profile"):
        raise InvalidQuery("pseudonymised copies are made from studies in Ferry: fetch them first")
    body = _transfer_input(place, visitor.form, studies, send=not on_node)
    made: TransferOut = await run_operation(request, visitor, create_transfer, body=body)
    if body.profile is not None:
        return RedirectResponse(f"/transfers/{made.id}?done=copying", status_code=303)
    if not on_node:
        return RedirectResponse(f"/transfers/{made.id}?done=sent", status_code=303)
    fetch = form_input(NodeStudiesIn, {"node": node, "studies": on_node, "send": True})
    path = {"transfer_id": made.id}
    await run_operation(request, visitor, add_studies_from_node, path=path, body=fetch)
    return RedirectResponse(f"/transfers/{made.id}?done=fetching", status_code=303)


def _patients(transfer: TransferOut) -> list[PatientGroup]:
    groups: dict[tuple[str, str], list[int]] = {}
    for index, study in enumerate(transfer.studies):
        groups.setdefault((study.patient_id, study.patient_name), []).append(index)
    out = []
    for (patient_id, name), indexes in groups.items():
        first = transfer.studies[indexes[0]]
        out.append(
            PatientGroup(
                patient_id, name, first.patient_birth_date, first.patient_sex, tuple(indexes)
            )
        )
    return out


@signed_in
async def draft_summary(request: Request, visitor: Visitor) -> Response:
    """What an upload put into a draft: its patients and studies, and the send button."""
    place = visitor.place(request.path_params["code"])
    path = transfer_path(request)
    draft: TransferOut = await run_operation(request, visitor, get_transfer, path=path)
    context = {"place": place, "t": draft, "patients": _patients(draft)}
    return render(request, "transfers/_draft.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


@signed_in
async def send_draft(request: Request, visitor: Visitor) -> Response:
    path = transfer_path(request)
    if visitor.form.get("discard"):
        body = ReasonIn(reason="discarded by the sender before sending")
        await run_operation(request, visitor, cancel_transfer, path=path, body=body)
        code = request.path_params["code"]
        return RedirectResponse(f"/institutions/{code}/send?done=discarded", status_code=303)
    sent: TransferOut = await run_operation(request, visitor, send_transfer, path=path)
    return RedirectResponse(f"/transfers/{sent.id}?done=sent", status_code=303)
