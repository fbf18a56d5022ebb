"""One transfer and its studies (`/transfers/{id}`): the patient banner first, the study facts,
series with thumbnails, reports, the history; and the actions the person may take, by right.

The page runs the JSON API's own operations (`get_transfer`, `create_viewer_link`,
`deliver_transfer`, `mark_transfer_done`, `return_transfer`), so every refusal, decision and
audit event is the API's; a transfer the person is no party to is a 404 like a missing one.
Each button is shown only when `decide()` allows its action from the person's side.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from archive.models import Instance, Series, Study
from exchange.models import Transfer, TransferStatus
from exchange.parties import decide_on, load_transfer, side_of
from exchange.receiving import DELIVERABLE
from foundation.errors import NotFound
from policy import store
from policy.roles import Action
from portal.pages.session import Visitor, form_input, render, run_operation, signed_in
from portal.receiving_api import create_viewer_link, deliver_transfer
from portal.transfer_schemas import DeliverIn, ReasonIn, ReturnIn, TransferOut, ViewerLinkIn
from portal.transfers_api import PARAMETERS, get_transfer, mark_transfer_done, return_transfer

CLOSED = frozenset({TransferStatus.RETURNED, TransferStatus.CANCELLED, TransferStatus.REFUSED})


@dataclass(frozen=True)
class SeriesRow:
    uid: str
    number: int | None
    modality: str
    description: str
    instances: int


@dataclass(frozen=True)
class Rights:
    """Which buttons the page shows: each the same decision as the action's own."""

    view: bool = False
    download: bool = False
    deliver_to: tuple[str, ...] = ()
    mark_done: bool = False
    send_back: bool = False


def _series(engine: Engine, study_uids: list[str]) -> dict[str, list[SeriesRow]]:
    found: dict[str, list[SeriesRow]] = {uid: [] for uid in study_uids}
    with Session(engine) as session:
        rows = session.exec(
            select(Study.study_instance_uid, Series, Instance.pk)
            .join(Series, col(Series.study_pk) == col(Study.pk))
            .join(Instance, col(Instance.series_pk) == col(Series.pk))
            .where(col(Study.study_instance_uid).in_(study_uids))
        ).all()
    counted: dict[tuple[str, str], tuple[Series, int]] = {}
    for study_uid, series, _ in rows:
        key = (study_uid, series.series_instance_uid)
        counted[key] = (series, counted.get(key, (series, 0))[1] + 1)
    for (study_uid, uid), (series, count) in counted.items():
        found[study_uid].append(
            SeriesRow(uid, series.series_number, series.modality, series.series_description, count)
        )
    for rows_of_study in found.values():
        rows_of_study.sort(key=lambda row: (row.number is None, row.number or 0))
    return found


def _rights(visitor: Visitor, transfer: Transfer, engine: Engine) -> Rights:
    actor = visitor.actor
    status = TransferStatus(transfer.status)

    def allowed(action: Action, side: str | None = None) -> bool:
        decision = decide_on(actor, action, transfer)
        return decision.allowed and (side is None or side_of(decision) == side)

    receiver = allowed(Action.READ_METADATA, "receiver")
    open_on_worklist = receiver and status not in CLOSED and transfer.done_at is None
    nodes: tuple[str, ...] = ()
    if allowed(Action.DOWNLOAD, "receiver") and status in DELIVERABLE:
        rows = store.list_nodes(engine, [transfer.destination_institution_pk])
        nodes = tuple(node.ae_title for node in rows if node.can_write)
    return Rights(
        view=allowed(Action.READ_PIXELS) and status not in CLOSED,
        download=allowed(Action.DOWNLOAD) and status not in CLOSED,
        deliver_to=nodes,
        mark_done=open_on_worklist,
        send_back=open_on_worklist,
    )


def _zone(visitor: Visitor, shown: TransferOut) -> str:
    code = shown.destination if shown.side == "receiver" else shown.sender
    return next((p.timezone for p in visitor.places if p.code == code), visitor.timezone)


@signed_in
async def transfer_page(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    shown: TransferOut = await run_operation(request, visitor, get_transfer, path=path)
    engine = request.app.state.archive.engine
    transfer = await anyio.to_thread.run_sync(load_transfer, engine, shown.id)
    rights = await anyio.to_thread.run_sync(_rights, visitor, transfer, engine)
    uids = [study.study_uid for study in shown.studies]
    series = await anyio.to_thread.run_sync(_series, engine, uids)
    place = next((p for p in visitor.places if p.code in (shown.destination, shown.sender)), None)
    context = {"t": shown, "rights": rights, "series": series, "place": place}
    return render(request, "transfers/show.html", context, visitor=visitor,
                  timezone=_zone(visitor, shown))  # fmt: skip


def _path(request: Request) -> dict[str, str]:
    """The transfer's opaque id as the API reads it; anything else is a transfer not found."""
    text = request.path_params["transfer_id"]
    try:
        return {"transfer_id": PARAMETERS["transfer_id"].parse(text)}
    except ValueError:
        raise NotFound(f"no transfer {text[:40]!r}") from None


def _done(transfer_id: str, key: str) -> Response:
    return RedirectResponse(f"/transfers/{transfer_id}?done={key}", status_code=303)


@signed_in
async def view_study(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(ViewerLinkIn, {"study": visitor.form.get("study") or None})
    link = await run_operation(request, visitor, create_viewer_link, path=path, body=body)
    return RedirectResponse(link.url, status_code=303)


@signed_in
async def deliver(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(DeliverIn, {"node": visitor.form.get("node", "")})
    await run_operation(request, visitor, deliver_transfer, path=path, body=body)
    return _done(path["transfer_id"], "delivering")


@signed_in
async def mark_done(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    await run_operation(request, visitor, mark_transfer_done, path=path, body=ReasonIn())
    return _done(path["transfer_id"], "done")


@signed_in
async def send_back(request: Request, visitor: Visitor) -> Response:
    path = _path(request)
    body = form_input(ReturnIn, {"reason": visitor.form.get("reason", "").strip()})
    await run_operation(request, visitor, return_transfer, path=path, body=body)
    return _done(path["transfer_id"], "returned")
