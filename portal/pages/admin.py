"""Administration pages of one institution (`/institutions/{code}/admin/...`): the registrations
waiting (approve with roles, reject with a reason), the people and their roles, the nodes
(PACS and RIS), who may send to the institution and when (destination rules, core hours,
holidays), the API clients and their tokens (a new token shown once, on the answer to its
form). The direct-push routes are `portal.pages.push_routes`; the failed transfers and parked
jobs `portal.pages.admin_jobs`.

Each page runs the admin JSON API's own operations (`list_institution_registrations`,
`approve_registration`, `reject_registration`, `list_members`, `set_member_roles`, the API
client, holiday and job operations), so the
decisions (an institution administrator acts on their institutions only; access into a
security institution is given by its own administrators), refusals and audit are the API's.
The "Administration" tab is shown only to those the decision allows; anyone else opening an
administration page gets the API's refusal (403, or 404 for an institution they cannot see).
"""

from __future__ import annotations

import re
from datetime import date

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foundation.errors import InvalidQuery, NodeFailed, NotFound
from policy import store
from policy.roles import Action, Role, Scope
from portal.admin_api import (
    approve_registration,
    create_api_client,
    get_api_client,
    issue_api_token,
    list_api_clients,
    list_institution_registrations,
    list_members,
    reject_registration,
    revoke_api_client,
    revoke_api_token,
    set_member_roles,
)
from portal.api_schemas import (
    ApiClientIn,
    ApiClientOut,
    DestinationRuleIn,
    DestinationRuleOut,
    HolidayIn,
    HolidayOut,
    HoursIn,
    HoursOut,
    MembershipOut,
    NodeEchoIn,
    NodeEchoOut,
    NodeIn,
    NodeOut,
    NodePermissionIn,
    NodePermissionOut,
    RegistrationOut,
    RegistrationQuery,
    RejectIn,
    RolesIn,
    TokenCreated,
    TokenIn,
)
from portal.destinations_api import (
    add_holiday,
    add_node_permission,
    create_destination_rule,
    create_node,
    delete_destination_rule,
    delete_node,
    echo_node,
    get_hours,
    get_node,
    list_destination_rules,
    list_holidays,
    list_node_permissions,
    list_nodes,
    remove_holiday,
    remove_node_permission,
    set_hours,
)
from portal.pages.session import (
    Place,
    Visitor,
    decide_on_place,
    form_input,
    form_list,
    render,
    run_operation,
    signed_in,
)

ROLE_WORDS = {
    Role.INSTITUTION_ADMIN: ("administrator", "people, nodes, rules, hours, audit"),
    Role.SENDER: ("sender", "sends studies and answers requests"),
    Role.RECEIVER: ("receiver", "receives, downloads and delivers studies"),
    Role.VIEWER: ("viewer", "views studies in the browser"),
    Role.REQUESTER: ("requester", "asks other institutions for imaging"),
    Role.AUDITOR: ("auditor", "reads the audit trail and statistics"),
}
TABS = (
    ("registrations", "Registrations"),
    ("people", "People and roles"),
    ("nodes", "Nodes"),
    ("rules", "Who may send to us, and when"),
    ("api-clients", "API clients and tokens"),
    ("routes", "Direct-push routes"),
    ("profiles", "Pseudonymisation profiles"),
    ("jobs", "Failed jobs and transfers"),
)


def may_administer(visitor: Visitor, place: Place) -> bool:
    """Whether the Administration tab is shown: the decision every admin operation makes."""
    return decide_on_place(
        visitor.principal, Action.ADMINISTER, place, visitor.actor.context
    ).allowed


def may_oversee(visitor: Visitor, place: Place) -> bool:
    """Whether the Oversight tab is shown: the decision every oversight operation makes
    (`portal.pages.oversight`)."""
    return decide_on_place(visitor.principal, Action.AUDIT, place, visitor.actor.context).allowed


def admin_context(place: Place, tab: str, visitor: Visitor, **values: object) -> dict[str, object]:
    return {
        "place": place,
        "may_oversee": may_oversee(visitor, place),
        "admin_tab": tab,
        "admin_tabs": TABS,
        "roles": [(role.value, *ROLE_WORDS[role]) for role in Role],
        **values,
    }


@signed_in
async def registrations_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    status = request.query_params.get("status", "pending")
    query = form_input(RegistrationQuery, {"status": status})
    rows: list[RegistrationOut] = await run_operation(
        request, visitor, list_institution_registrations, path={"code": place.code}, query=query
    )
    context = admin_context(
        place, "registrations", visitor, registrations=rows, status=query.status
    )
    return render(request, "admin/registrations.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


def _registration_pk(request: Request) -> int:
    text = request.path_params["registration_pk"]
    if not text.isdigit() or len(text) > 10:
        raise InvalidQuery("no such registration")
    return int(text)


@signed_in
async def decide_registration(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"registration_pk": _registration_pk(request)}
    if visitor.form.get("decision") == "reject":
        note = form_input(RejectIn, {"note": visitor.form.get("note", "")})
        await run_operation(request, visitor, reject_registration, path=path, body=note)
        done = "registration-rejected"
    else:
        roles = form_list(request, "role")
        if not roles:
            raise InvalidQuery("choose at least one role to approve with")
        chosen = form_input(RolesIn, {"roles": roles})
        await run_operation(request, visitor, approve_registration, path=path, body=chosen)
        done = "registration-approved"
    return RedirectResponse(f"/institutions/{place.code}/admin?done={done}", status_code=303)


@signed_in
async def people_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    members: list[MembershipOut] = await run_operation(
        request, visitor, list_members, path={"code": place.code}
    )
    members.sort(key=lambda m: m.email)
    context = admin_context(place, "people", visitor, members=members)
    return render(request, "admin/people.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def save_roles(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    text = request.path_params["user_pk"]
    if not text.isdigit() or len(text) > 10:
        raise InvalidQuery("no such person")
    roles = form_list(request, "role")
    if not roles:
        raise InvalidQuery("keep at least one role, or remove the person from the institution")
    body = form_input(RolesIn, {"roles": roles})
    path = {"code": place.code, "user_pk": int(text)}
    await run_operation(request, visitor, set_member_roles, path=path, body=body)
    return RedirectResponse(
        f"/institutions/{place.code}/admin/people?done=roles-saved", status_code=303
    )


# --- nodes ----------------------------------------------------------------------------------

NODE_FLAGS = ("can_query", "can_write", "worklist", "tls", "move_destination", "any_address")


@signed_in
async def nodes_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    nodes: list[NodeOut] = await run_operation(
        request, visitor, list_nodes, path={"code": place.code}
    )
    nodes.sort(key=lambda n: n.ae_title)
    context = admin_context(place, "nodes", visitor, nodes=nodes)
    return render(request, "admin/nodes.html", context, visitor=visitor, timezone=place.timezone)


def pk_of(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 10:
        raise InvalidQuery(f"no such {what}")
    return int(text)


@signed_in
async def add_node(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    form = visitor.form
    values: dict[str, object] = {
        "ae_title": form.get("ae_title", ""),
        "host": form.get("host", ""),
        "port": form.get("port", ""),
        "description": form.get("description", ""),
        "retrieve_method": form.get("retrieve_method", "move"),
        **{flag: flag in form for flag in NODE_FLAGS},
    }
    body = form_input(NodeIn, values)
    await run_operation(request, visitor, create_node, path={"code": place.code}, body=body)
    return RedirectResponse(f"/institutions/{place.code}/admin/nodes?done=node-added", 303)


@signed_in
async def remove_node(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"node_pk": pk_of(request.path_params["node_pk"], "node")}
    await run_operation(request, visitor, delete_node, path=path)
    return RedirectResponse(f"/institutions/{place.code}/admin/nodes?done=node-removed", 303)


# --- destination rules and core hours -------------------------------------------------------

WEEKDAYS = ((1, "Monday"), (2, "Tuesday"), (3, "Wednesday"), (4, "Thursday"), (5, "Friday"),
            (6, "Saturday"), (7, "Sunday"))  # fmt: skip
WINDOWS = (("always", "at any time"), ("core", "in core hours"), ("out-of-hours", "out of hours"))


@signed_in
async def rules_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"code": place.code}
    rules: list[DestinationRuleOut] = await run_operation(
        request, visitor, list_destination_rules, path=path
    )
    nodes: list[NodeOut] = await run_operation(request, visitor, list_nodes, path=path)
    hours: HoursOut = await run_operation(request, visitor, get_hours, path=path)
    holidays: list[HolidayOut] = await run_operation(request, visitor, list_holidays, path=path)
    holidays.sort(key=lambda h: h.day)
    engine = request.app.state.archive.engine
    institutions = await anyio.to_thread.run_sync(store.list_institutions, engine, None)
    codes = {row.pk: row.code for row in institutions}
    context = admin_context(
        place,
        "rules",
        visitor,
        rules=rules,
        nodes={n.pk: n.ae_title for n in nodes},
        hours=hours,
        holidays=holidays,
        senders=sorted(
            (row.code, row.name)
            for row in institutions
            if row.pk != place.pk and row.parent_pk is None
        ),
        codes=codes,
        weekdays=WEEKDAYS,
        windows=WINDOWS,
    )
    return render(request, "admin/rules.html", context, visitor=visitor, timezone=place.timezone)


@signed_in
async def add_rule(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    form = visitor.form
    target = form.get("node", "")
    values = {
        "sender": form.get("sender") or None,
        "node_pk": pk_of(target, "node") if target else None,
        "window": form.get("window", "always"),
        "pseudonymised_only": "pseudonymised_only" in form,
    }
    body = form_input(DestinationRuleIn, values)
    path = {"code": place.code}
    await run_operation(request, visitor, create_destination_rule, path=path, body=body)
    return RedirectResponse(f"/institutions/{place.code}/admin/rules?done=rule-added", 303)


@signed_in
async def remove_rule(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    path = {"rule_pk": pk_of(request.path_params["rule_pk"], "rule")}
    await run_operation(request, visitor, delete_destination_rule, path=path)
    return RedirectResponse(f"/institutions/{place.code}/admin/rules?done=rule-removed", 303)


@signed_in
async def save_hours(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    days = [int(d) for d in form_list(request, "weekday") if d.isdigit() and len(d) == 1]
    values = {"weekdays": days, "start": visitor.form.get("start", ""),
              "end": visitor.form.get("end", "")}  # fmt: skip
    body = form_input(HoursIn, values)
    await run_operation(request, visitor, set_hours, path={"code": place.code}, body=body)
    return RedirectResponse(f"/institutions/{place.code}/admin/rules?done=hours-saved", 303)


# --- API clients and their tokens -----------------------------------------------------------

SCOPE_WORDS = {
    Scope.READ: "read: search and read studies",
    Scope.WRITE: "write: store studies",
    Scope.DOWNLOAD: "download: fetch whole studies",
    Scope.TRANSFER: "transfer: send and answer transfers",
    Scope.DELETE: "delete: remove studies (needs the administrator role)",
}
TOKEN_ID = re.compile(r"^[0-9a-f]{1,32}$")


@signed_in
async def api_clients_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    clients: list[ApiClientOut] = await run_operation(
        request, visitor, list_api_clients, path={"code": place.code}
    )
    clients.sort(key=lambda c: (c.disabled, c.name.lower()))
    context = admin_context(
        place,
        "api-clients",
        visitor,
        clients=clients,
        scopes=[(s.value, w) for s, w in SCOPE_WORDS.items()],
    )
    return render(request, "admin/api_clients.html", context, visitor=visitor,
                  timezone=place.timezone)  # fmt: skip


def _token_values(request: Request, visitor: Visitor) -> dict[str, object]:
    """The scopes and expiry of a token form; an empty expiry is a token that does not expire."""
    expires = visitor.form.get("expires_days", "").strip()
    return {"scopes": form_list(request, "scope"), "expires_days": expires or None}


def _shown_once(
    request: Request, visitor: Visitor, place: Place, created: TokenCreated
) -> Response:
    """The token's one showing: in the answer to the POST, never in a URL or a later page."""
    context = admin_context(place, "api-clients", visitor, created=created)
    return render(request, "admin/api_token.html", context, visitor=visitor,
                  timezone=place.timezone, status=201)  # fmt: skip


@signed_in
async def create_client(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    values = {
        "name": visitor.form.get("name", "").strip(),
        "roles": form_list(request, "role"),
        **_token_values(request, visitor),
    }
    body = form_input(ApiClientIn, values)
    created: TokenCreated = await run_operation(
        request, visitor, create_api_client, path={"code": place.code}, body=body
    )
    return _shown_once(request, visitor, place, created)


async def _own_client(request: Request, visitor: Visitor, place: Place) -> int:
    """The client of the path, if it belongs to this page's institution (else 404, as missing)."""
    pk = pk_of(request.path_params["client_pk"], "API client")
    client: ApiClientOut = await run_operation(
        request, visitor, get_api_client, path={"client_pk": pk}
    )
    if client.institution_pk != place.pk:
        raise NotFound(f"no API client {pk}")
    return pk


@signed_in
async def issue_token(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    pk = await _own_client(request, visitor, place)
    body = form_input(TokenIn, _token_values(request, visitor))
    created: TokenCreated = await run_operation(
        request, visitor, issue_api_token, path={"client_pk": pk}, body=body
    )
    return _shown_once(request, visitor, place, created)


@signed_in
async def revoke_token(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    token_id = request.path_params["token_id"]
    if not TOKEN_ID.match(token_id):
        raise InvalidQuery("no such token")
    pk = await _own_client(request, visitor, place)
    path = {"client_pk": pk, "token_id": token_id}
    await run_operation(request, visitor, revoke_api_token, path=path)
    return RedirectResponse(f"/institutions/{place.code}/admin/api-clients?done=token-revoked", 303)


@signed_in
async def revoke_client(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    pk = await _own_client(request, visitor, place)
    await run_operation(request, visitor, revoke_api_client, path={"client_pk": pk})
    return RedirectResponse(
        f"/institutions/{place.code}/admin/api-clients?done=client-revoked", 303
    )


@signed_in
async def add_a_holiday(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    values = {"day": visitor.form.get("day", ""), "name": visitor.form.get("name", "").strip()}
    body = form_input(HolidayIn, values)
    await run_operation(request, visitor, add_holiday, path={"code": place.code}, body=body)
    return RedirectResponse(f"/institutions/{place.code}/admin/rules?done=holiday-added", 303)


@signed_in
async def remove_a_holiday(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    text = request.path_params["day"]
    try:
        day = date.fromisoformat(text if len(text) == 10 else "")
    except ValueError:
        raise InvalidQuery("no such holiday: a day is YYYY-MM-DD") from None
    await run_operation(request, visitor, remove_holiday, path={"code": place.code, "day": day})
    return RedirectResponse(f"/institutions/{place.code}/admin/rules?done=holiday-removed", 303)


# --- who may use each node ------------------------------------------------------------------

SUBJECT_KINDS = (("role", "everyone with the role"), ("user", "one person (email)"),
                 ("institution", "an institution (code)"))  # fmt: skip


async def _place_node(request: Request, visitor: Visitor, place: Place) -> NodeOut:
    """The node named in the path, if it is this institution's; any other is not found."""
    path = {"node_pk": pk_of(request.path_params["node_pk"], "node")}
    node: NodeOut = await run_operation(request, visitor, get_node, path=path)
    if node.institution_pk != place.pk:
        raise NotFound("no such node")
    return node


@signed_in
async def node_page(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    return await _show_node(request, visitor, place, await _place_node(request, visitor, place))


async def _show_node(
    request: Request,
    visitor: Visitor,
    place: Place,
    node: NodeOut,
    echo: NodeEchoOut | None = None,
    echo_failure: str = "",
) -> Response:
    path = {"node_pk": node.pk}
    rights: list[NodePermissionOut] = await run_operation(
        request, visitor, list_node_permissions, path=path
    )
    context = admin_context(place, "nodes", visitor, node=node, rights=rights,
                            kinds=SUBJECT_KINDS, echo=echo, echo_failure=echo_failure)  # fmt: skip
    status = 502 if echo_failure else 200
    return render(request, "admin/node.html", context, visitor=visitor, status=status,
                  timezone=place.timezone)  # fmt: skip


@signed_in
async def check_node(request: Request, visitor: Visitor) -> Response:
    """C-ECHO the node and show the node's page with what it answered."""
    place = visitor.place(request.path_params["code"])
    node = await _place_node(request, visitor, place)
    try:
        echo = await run_operation(
            request, visitor, echo_node, path={"node_pk": node.pk}, body=NodeEchoIn()
        )
    except NodeFailed as failure:
        return await _show_node(request, visitor, place, node, echo_failure=str(failure))
    return await _show_node(request, visitor, place, node, echo=echo)


@signed_in
async def add_node_right(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    node = await _place_node(request, visitor, place)
    form = visitor.form
    values = {
        "subject_kind": form.get("subject_kind", ""),
        "subject": form.get("subject", ""),
        "can_query": "can_query" in form,
        "can_write": "can_write" in form,
    }
    body = form_input(NodePermissionIn, values)
    await run_operation(request, visitor, add_node_permission, path={"node_pk": node.pk}, body=body)
    return RedirectResponse(
        f"/institutions/{place.code}/admin/nodes/{node.pk}?done=right-added", status_code=303
    )


@signed_in
async def remove_node_right(request: Request, visitor: Visitor) -> Response:
    place = visitor.place(request.path_params["code"])
    node = await _place_node(request, visitor, place)
    path = {"node_pk": node.pk,
            "permission_pk": pk_of(request.path_params["permission_pk"], "right")}  # fmt: skip
    await run_operation(request, visitor, remove_node_permission, path=path)
    return RedirectResponse(
        f"/institutions/{place.code}/admin/nodes/{node.pk}?done=right-removed", status_code=303
    )
