"""The admin JSON API, part two: nodes, DIMSE routes, destination rules, hours and grants."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import Engine

from exchange import grants
from exchange.request_search import RemotePacs
from foundation.errors import InvalidQuery, NotFound
from policy import store
from policy.decision import NodeFacts
from policy.models import DestinationRule, Node, Route
from policy.store import destinations as routes
from portal.admin_access import Access
from portal.api_schemas import (
    DestinationRuleIn,
    DestinationRuleOut,
    GrantIn,
    GrantOut,
    HolidayIn,
    HolidayOut,
    HoursIn,
    HoursOut,
    NodeEchoIn,
    NodeEchoOut,
    NodeIn,
    NodeOut,
    NodePatch,
    NodePermissionIn,
    NodePermissionOut,
    RouteIn,
    RouteOut,
    RouteQuery,
)
from portal.openapi import Call, Operation


def _engine(call: Call) -> Engine:
    engine: Engine = call.state.archive.engine
    return engine


# --- nodes and who may query or write them --------------------------------------------------


def list_nodes(call: Call) -> list[NodeOut]:
    facts = Access(call).require_code(call.path["code"])
    return [NodeOut.model_validate(n) for n in store.list_nodes(_engine(call), [facts.pk])]


def create_node(call: Call) -> NodeOut:
    """A node that may query or write acts for its institution: a way into its studies."""
    access = Access(call)
    facts = access.require_code(call.path["code"])
    body: NodeIn = call.body
    if body.can_query or body.can_write:
        access.require_access(facts.pk)
    node = NodeFacts(pk=0, institution_pk=facts.pk, **body.model_dump())
    return NodeOut.model_validate(store.create_node(_engine(call), node))


def _node(call: Call) -> Node:
    pk = call.path["node_pk"]
    try:
        node = store.get_node(_engine(call), pk)
    except store.UnknownRecord:
        raise NotFound(f"no node {pk}") from None
    Access(call).require(node.institution_pk, f"node {pk}")
    return node


def get_node(call: Call) -> NodeOut:
    return NodeOut.model_validate(_node(call))


def update_node(call: Call) -> NodeOut:
    node = _node(call)
    body: NodePatch = call.body
    if body.can_query or body.can_write:
        Access(call).require_access(node.institution_pk)
    changes = body.model_dump(exclude_none=True)
    if "reconcile_with_pk" in body.model_fields_set:  # an explicit null stops reconciling
        changes["reconcile_with_pk"] = body.reconcile_with_pk
    changed = replace(store.node_facts(node), **changes)
    return NodeOut.model_validate(store.update_node(_engine(call), changed))


def echo_node(call: Call) -> NodeEchoOut:
    """C-ECHO the node from Ferry, as its administrators check a new or changed address; a node
    that cannot be reached or answers with a failure is 502, saying why."""
    node = _node(call)
    pacs: RemotePacs | None = getattr(call.state, "remote_pacs", None)
    if pacs is None:
        raise InvalidQuery("this Ferry cannot reach nodes from here")
    seconds = pacs.echo(node.pk or 0)
    return NodeEchoOut(ae_title=node.ae_title, host=node.host, port=node.port, status="0x0000",
                       milliseconds=round(seconds * 1000, 1))  # fmt: skip


def delete_node(call: Call) -> None:
    store.delete_node(_engine(call), _node(call).pk or 0)


def list_node_permissions(call: Call) -> list[NodePermissionOut]:
    node = _node(call)
    rows = store.list_node_permissions(_engine(call), node.pk or 0)
    return [NodePermissionOut.model_validate(row) for row in rows]


def add_node_permission(call: Call) -> NodePermissionOut:
    node = _node(call)
    body: NodePermissionIn = call.body
    fields = body.model_dump()
    permission = store.add_node_permission(
        _engine(call), node.pk or 0, fields.pop("subject_kind"), fields.pop("subject"), **fields
    )
    return NodePermissionOut.model_validate(permission)


def remove_node_permission(call: Call) -> None:
    node = _node(call)
    store.remove_node_permission(_engine(call), node.pk or 0, call.path["permission_pk"])


# --- direct-push routes (called AE titles) --------------------------------------------------


def _route_out(access: Access, route: Route) -> RouteOut:
    return RouteOut.model_validate(
        {
            **route.model_dump(),
            "destination": access.code_of(route.destination_institution_pk),
        }
    )


def list_routes(call: Call) -> list[RouteOut]:
    """Into one institution (refused with 403/404 like the rest), else all one administers."""
    access = Access(call)
    query: RouteQuery | None = call.query
    code = query.institution if query is not None else None
    scope = frozenset({access.require_code(code).pk}) if code else access.administered()
    rows = routes.list_routes(_engine(call), scope)
    return [_route_out(access, route) for route in rows]


def create_route(call: Call) -> RouteOut:
    access = Access(call)
    body: RouteIn = call.body
    facts = access.require_code(body.destination)
    own = call.state.portal.dicom_ae_title
    if body.called_ae_title.strip() == own:
        raise store.InvalidRecord(f"{own!r} is Ferry's own AE title; a route needs another")
    fields = body.model_dump(exclude={"called_ae_title", "destination"})
    route = routes.create_route(_engine(call), body.called_ae_title, facts.pk, **fields)
    return _route_out(access, route)


def _route(call: Call) -> tuple[Access, Route]:
    pk = call.path["route_pk"]
    try:
        route = routes.get_route(_engine(call), pk)
    except store.UnknownRecord:
        raise NotFound(f"no route {pk}") from None
    access = Access(call)
    access.require(route.destination_institution_pk, f"route {pk}")
    return access, route


def get_route(call: Call) -> RouteOut:
    return _route_out(*_route(call))


def delete_route(call: Call) -> None:
    _, route = _route(call)
    routes.delete_route(_engine(call), route.pk or 0)


# --- destination rules ----------------------------------------------------------------------


def list_destination_rules(call: Call) -> list[DestinationRuleOut]:
    facts = Access(call).require_code(call.path["code"])
    rules = store.list_destination_rules(_engine(call), [facts.pk])
    return [DestinationRuleOut.model_validate(rule) for rule in rules]


def create_destination_rule(call: Call) -> DestinationRuleOut:
    access = Access(call)
    facts = access.require_code(call.path["code"])
    body: DestinationRuleIn = call.body
    sender = None
    if body.sender is not None:
        sender = access.pk_of(body.sender)
        if sender is None:
            raise store.InvalidRecord(f"no sending institution {body.sender!r}")
    rule = store.create_destination_rule(
        _engine(call),
        facts.pk,
        node_pk=body.node_pk,
        sender_institution_pk=sender,
        window=body.window,
        out_of_hours_node_pk=body.out_of_hours_node_pk,
        out_of_hours_to_worklist=body.out_of_hours_to_worklist,
        pseudonymised_only=body.pseudonymised_only,
    )
    return DestinationRuleOut.model_validate(rule)


def _rule(call: Call) -> DestinationRule:
    pk = call.path["rule_pk"]
    try:
        rule = store.get_destination_rule(_engine(call), pk)
    except store.UnknownRecord:
        raise NotFound(f"no destination rule {pk}") from None
    Access(call).require(rule.institution_pk, f"destination rule {pk}")
    return rule


def get_destination_rule(call: Call) -> DestinationRuleOut:
    return DestinationRuleOut.model_validate(_rule(call))


def delete_destination_rule(call: Call) -> None:
    store.delete_destination_rule(_engine(call), _rule(call).pk or 0)


# --- core hours and holidays ----------------------------------------------------------------


def _hours_out(call: Call, institution_pk: int, timezone: str) -> HoursOut:
    hours = store.core_hours(_engine(call), institution_pk)
    return HoursOut(
        institution_pk=institution_pk,
        weekdays=[int(day) for day in hours.weekdays.split(",") if day],
        start=hours.start,
        end=hours.end,
        timezone=timezone,
    )


def get_hours(call: Call) -> HoursOut:
    facts = Access(call).require_code(call.path["code"])
    return _hours_out(call, facts.pk, facts.hours.timezone)


def set_hours(call: Call) -> HoursOut:
    facts = Access(call).require_code(call.path["code"])
    body: HoursIn = call.body
    store.set_core_hours(_engine(call), facts.pk, body.weekdays, body.start, body.end)
    return _hours_out(call, facts.pk, facts.hours.timezone)


def list_holidays(call: Call) -> list[HolidayOut]:
    facts = Access(call).require_code(call.path["code"])
    return [HolidayOut.model_validate(h) for h in store.list_holidays(_engine(call), facts.pk)]


def add_holiday(call: Call) -> HolidayOut:
    facts = Access(call).require_code(call.path["code"])
    body: HolidayIn = call.body
    holiday = store.add_holiday(_engine(call), facts.pk, body.day, body.name)
    return HolidayOut.model_validate(holiday)


def remove_holiday(call: Call) -> None:
    facts = Access(call).require_code(call.path["code"])
    store.remove_holiday(_engine(call), facts.pk, call.path["day"])


# --- grants ---------------------------------------------------------------------------------


def _require_owner(access: Access, owner: int | None, label: str) -> None:
    """Granting is for the study's owner; an unowned study, for the system only."""
    if owner is None:
        access.require_system()
    else:
        access.require(owner, label)


def list_grants(call: Call) -> list[GrantOut]:
    facts = Access(call).require_code(call.path["code"])
    return [GrantOut.model_validate(g) for g in grants.list_grants(_engine(call), facts.pk)]


def create_grant(call: Call) -> GrantOut:
    access = Access(call)
    body: GrantIn = call.body
    engine = _engine(call)
    try:
        owner = grants.study_owner(engine, body.study_uid)
    except store.UnknownRecord:
        raise NotFound(f"no study {body.study_uid}") from None
    _require_owner(access, owner, f"study {body.study_uid}")
    if owner is not None:  # a grant opens the owner's study: its own administrators decide
        access.require_access(owner)
    recipient = access.pk_of(body.institution)
    if recipient is None:
        raise store.InvalidRecord(f"no institution {body.institution!r}")
    expires = call.now + timedelta(days=body.expires_days) if body.expires_days else None
    view = grants.grant_study(
        engine,
        body.study_uid,
        recipient,
        expires_at=expires,
        reason=body.reason,
        actions=body.actions,
        now=call.now,
    )
    return GrantOut.model_validate(view)


def revoke_grant(call: Call) -> GrantOut:
    access = Access(call)
    pk = call.path["grant_pk"]
    engine = _engine(call)
    try:
        grant = grants.get_grant(engine, pk)
    except store.UnknownRecord:
        raise NotFound(f"no grant {pk}") from None
    _require_owner(access, grant.owner_institution_pk, f"grant {pk}")
    return GrantOut.model_validate(grants.revoke_grant(engine, pk, call.now))


_N = "nodes"
_RT = "routes"
_D = "destination rules"
_H = "hours"
_G = "grants"
OPERATIONS: list[Operation] = [
    Operation("GET", "/institutions/{code}/nodes", list_nodes, "an institution's nodes", _N,
              response=list[NodeOut]),
    Operation("POST", "/institutions/{code}/nodes", create_node, "add a node", _N, NodeIn,
              NodeOut, 201),
    Operation("GET", "/nodes/{node_pk}", get_node, "one node", _N, response=NodeOut),
    Operation("PATCH", "/nodes/{node_pk}", update_node, "change a node", _N, NodePatch, NodeOut),
    Operation("DELETE", "/nodes/{node_pk}", delete_node, "remove a node", _N, status=204),
    Operation("POST", "/nodes/{node_pk}/echo", echo_node,
              "C-ECHO the node: does it answer Ferry at its address?", _N, NodeEchoIn,
              NodeEchoOut, asks_a_node=True),
    Operation("GET", "/nodes/{node_pk}/permissions", list_node_permissions,
              "who may query or write the node", _N, response=list[NodePermissionOut]),
    Operation("POST", "/nodes/{node_pk}/permissions", add_node_permission,
              "let a user, role or institution query or write the node", _N, NodePermissionIn,
              NodePermissionOut, 201),
    Operation("DELETE", "/nodes/{node_pk}/permissions/{permission_pk}", remove_node_permission,
              "remove a permission", _N, status=204),
    Operation("GET", "/routes", list_routes, "direct-push routes into institutions you administer",
              _RT, response=list[RouteOut], query=RouteQuery),
    Operation("POST", "/routes", create_route, "add a route: a called AE title that forwards", _RT,
              RouteIn, RouteOut, 201),
    Operation("GET", "/routes/{route_pk}", get_route, "one route", _RT, response=RouteOut),
    Operation("DELETE", "/routes/{route_pk}", delete_route, "remove a route", _RT, status=204),
    Operation("GET", "/institutions/{code}/destination-rules", list_destination_rules,
              "who may send here, and when", _D, response=list[DestinationRuleOut]),
    Operation("POST", "/institutions/{code}/destination-rules", create_destination_rule,
              "add a destination rule", _D, DestinationRuleIn, DestinationRuleOut, 201),
    Operation("GET", "/destination-rules/{rule_pk}", get_destination_rule, "one rule", _D,
              response=DestinationRuleOut),
    Operation("DELETE", "/destination-rules/{rule_pk}", delete_destination_rule, "remove a rule",
              _D, status=204),
    Operation("GET", "/institutions/{code}/hours", get_hours, "core hours", _H,
              response=HoursOut),
    Operation("PUT", "/institutions/{code}/hours", set_hours, "set core hours", _H, HoursIn,
              HoursOut),
    Operation("GET", "/institutions/{code}/holidays", list_holidays, "public holidays", _H,
              response=list[HolidayOut]),
    Operation("POST", "/institutions/{code}/holidays", add_holiday, "add a holiday", _H,
              HolidayIn, HolidayOut, 201),
    Operation("DELETE", "/institutions/{code}/holidays/{day}", remove_holiday,
              "remove a holiday", _H, status=204),
    Operation("GET", "/institutions/{code}/grants", list_grants,
              "grants it holds and grants on its studies", _G, response=list[GrantOut]),
    Operation("POST", "/grants", create_grant, "grant an institution access to a study", _G,
              GrantIn, GrantOut, 201),
    Operation("DELETE", "/grants/{grant_pk}", revoke_grant, "revoke a grant", _G,
              response=GrantOut),
]  # fmt: skip
