"""Administration: direct-push routes into the institution (`/institutions/{code}/admin/routes`).

A route is a called AE title that a PACS sends to, which Ferry forwards to this institution's
worklist or one of its nodes once the study is quiet (docs/dimse.md, "Direct push: routes").
The page lists the routes into the institution, adds one and removes one, each through the
admin API's own operation (`list_routes`, `create_route`, `get_route`, `delete_route`), so the
decisions (the institution's administrators), refusals and audit are the API's. A route of
another institution answers like a missing one (404).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import NotFound
from portal.api_schemas import NodeOut, RouteIn, RouteOut, RouteQuery
from portal.destinations_api import create_route, delete_route, get_route, list_nodes, list_routes
from portal.pages.admin import admin_context, pk_of
from portal.pages.session import Place, Visitor, form_input, render, run_operation, signed_in


@signed_in
async def routes_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    query = form_input(RouteQuery, {"institution": place.code})
    rows: list[RouteOut] = await run_operation(request, visitor, list_routes, query=query)
    nodes: list[NodeOut] = await run_operation(
        request, visitor, list_nodes, path={"code": place.code}
    )
    context = admin_context(
        place,
        "routes",
        visitor,
        routes=rows,
        nodes={n.pk: n.ae_title for n in sorted(nodes, key=lambda n: n.ae_title)},
        own_ae_title=request.app.state.portal.dicom_ae_title,
    )
    return render(request, "admin/routes.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def add_route(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    form = visitor.form
    target = form.get("node", "")
    values = {
        "called_ae_title": form.get("called_ae_title", "").strip(),
        "destination": place.code,
        "destination_node_pk": pk_of(target, "node") if target else None,
        "quiet_seconds": form.get("quiet_seconds", "").strip() or 30,
        "accept_unknown_callers": "accept_unknown_callers" in form,
        "description": form.get("description", "").strip(),
    }
    body = form_input(RouteIn, values)
    await run_operation(request, visitor, create_route, body=body)
    return _back(place, "route-added")


@signed_in
async def remove_route(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"route_pk": pk_of(request.path_params["route_pk"], "route")}
    route: RouteOut = await run_operation(request, visitor, get_route, path=path)
    if route.destination_institution_pk != place.pk:
        raise NotFound("no such route")  # another institution's, reached through this page
    await run_operation(request, visitor, delete_route, path=path)
    return _back(place, "route-removed")


def _back(place: Place, done: str) -> Response:
    return RedirectResponse(f"/institutions/{place.code}/admin/routes?done={done}", 303)
