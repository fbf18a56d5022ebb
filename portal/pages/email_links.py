"""The links in Ferry's emails (`/portal/transfers/12`, `/portal/requests/3`): the event's
opaque reference, opened for a signed-in party as the transfer's or request's own page.

Whoever is no party to it gets a 404 exactly like a reference that does not exist.
"""

from __future__ import annotations

import anyio
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange import parties, request_parties
from exchange.models import Transfer
from exchange.request_models import ImagingRequest
from foundation.errors import NotFound
from policy.roles import Action
from portal.pages.session import Visitor, signed_in


def _pk(request: Request) -> int:
    text = request.path_params["pk"]
    if not text.isdecimal() or not 1 <= int(text) <= 2**31 - 1:
        raise NotFound(f"nothing at {text[:20]!r}")
    return int(text)


def _transfer_page(request: Request, visitor: Visitor, pk: int) -> str:
    engine = request.app.state.archive.engine
    with Session(engine) as session:
        transfer = session.get(Transfer, pk)
    if transfer is None:
        raise NotFound(f"no transfer {pk}")
    parties.require(engine, visitor.actor, Action.SEARCH, transfer.public_id)
    return f"/transfers/{transfer.public_id}"


def _request_page(request: Request, visitor: Visitor, pk: int) -> str:
    engine = request.app.state.archive.engine
    with Session(engine) as session:
        asked = session.get(ImagingRequest, pk)
    if asked is None:
        raise NotFound(f"no request {pk}")
    request_parties.require(engine, visitor.actor, Action.SEARCH, asked.public_id)
    return f"/requests/{asked.public_id}"


@signed_in
async def transfer_link(request: Request, visitor: Visitor) -> Response:
    target = await anyio.to_thread.run_sync(_transfer_page, request, visitor, _pk(request))
    return RedirectResponse(target, status_code=303)


@signed_in
async def request_link(request: Request, visitor: Visitor) -> Response:
    target = await anyio.to_thread.run_sync(_request_page, request, visitor, _pk(request))
    return RedirectResponse(target, status_code=303)
