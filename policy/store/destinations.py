"""Nodes (DICOM application entities), their rights, direct-push routes, and destination rules."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields, replace

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from foundation.ae_titles import InvalidAETitle, parse_ae_title
from policy.decision import NodeFacts
from policy.models import DestinationRule, Institution, Node, NodePermission, RetrieveMethod, Route
from policy.roles import Role
from policy.store._base import (
    DuplicateRecord,
    InvalidRecord,
    UnknownRecord,
    check_text,
    reading,
    writing,
)

SUBJECT_KINDS = ("user", "role", "institution")
WINDOWS = ("always", "core", "out-of-hours")
RETRIEVE_METHODS = tuple(method.value for method in RetrieveMethod)
MAX_QUIET_SECONDS = 86400


def check_ae_title(title: str) -> str:
    """The AE title (`foundation.ae_titles`), or InvalidRecord saying why it is none."""
    try:
        return parse_ae_title(title)
    except InvalidAETitle as error:
        raise InvalidRecord(str(error)) from None


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidRecord(f"port {port} is outside 1-65535")
    return port


def _check_retrieve_method(method: str) -> str:
    if method not in RETRIEVE_METHODS:
        raise InvalidRecord(f"retrieve method must be one of {', '.join(RETRIEVE_METHODS)}")
    return method


def _check_reconcile_with(session: Session, node: Node, ris_pk: int | None) -> None:
    """Reconciliation asks a RIS of the node's own institution, never the node itself."""
    if ris_pk is None:
        return
    ris = session.get(Node, ris_pk)
    if ris is None or ris.institution_pk != node.institution_pk or ris_pk == node.pk:
        raise UnknownRecord(f"institution {node.institution_pk} has no other node {ris_pk}")
    if not ris.worklist:
        raise InvalidRecord(f"node {ris.ae_title} answers no worklist queries (worklist is off)")


_DESCRIBED = tuple(f.name for f in fields(NodeFacts) if f.name not in ("pk", "institution_pk"))


def node_facts(node: Node) -> NodeFacts:
    """The stored node as the value every layer passes around."""
    values = {name: getattr(node, name) for name in _DESCRIBED}
    return NodeFacts(pk=node.pk or 0, institution_pk=node.institution_pk, **values)


def _checked(facts: NodeFacts) -> NodeFacts:
    return replace(
        facts,
        ae_title=check_ae_title(facts.ae_title),
        host=check_text(facts.host, "host", 256, required=True),
        port=_check_port(facts.port),
        description=check_text(facts.description, "description", 256),
        retrieve_method=_check_retrieve_method(facts.retrieve_method),
    )


def create_node(engine: Engine, facts: NodeFacts) -> Node:
    """A new node of `facts.institution_pk`, described by `facts` (its `pk` is not read)."""
    facts = _checked(facts)
    node = Node(institution_pk=facts.institution_pk, **{n: getattr(facts, n) for n in _DESCRIBED})
    ae_title = facts.ae_title
    with writing(engine, f"AE title {ae_title!r} is taken") as session:
        if session.get(Institution, facts.institution_pk) is None:
            raise UnknownRecord(f"no institution {facts.institution_pk}")
        if session.exec(select(Node).where(Node.ae_title == ae_title)).first():
            raise DuplicateRecord(f"AE title {ae_title!r} is taken")
        _check_reconcile_with(session, node, facts.reconcile_with_pk)
        session.add(node)
    return node


def get_node(engine: Engine, pk: int) -> Node:
    with reading(engine) as session:
        node = session.get(Node, pk)
    if node is None:
        raise UnknownRecord(f"no node {pk}")
    return node


def find_node(engine: Engine, ae_title: str) -> Node:
    with reading(engine) as session:
        node = session.exec(select(Node).where(Node.ae_title == ae_title.strip())).first()
    if node is None:
        raise UnknownRecord(f"no node with AE title {ae_title!r}")
    return node


def list_nodes(engine: Engine, institution_pks: Collection[int] | None = None) -> list[Node]:
    query = select(Node).order_by(col(Node.ae_title))
    if institution_pks is not None:
        query = query.where(col(Node.institution_pk).in_(list(institution_pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def update_node(engine: Engine, facts: NodeFacts) -> Node:
    """Node `facts.pk` as `facts` describes it; its AE title and institution stay as they are.

    Callers change what they mean to: `replace(node_facts(get_node(engine, pk)), port=11112)`.
    """
    pk = facts.pk
    facts = _checked(facts)
    with writing(engine, "the node changed meanwhile") as session:
        node = session.get(Node, pk)
        if node is None:
            raise UnknownRecord(f"no node {pk}")
        if facts.reconcile_with_pk != node.reconcile_with_pk:
            _check_reconcile_with(session, node, facts.reconcile_with_pk)
        for name in _DESCRIBED:
            if name != "ae_title":
                setattr(node, name, getattr(facts, name))
        if not node.worklist and (user := _reconciling(session, pk)):
            raise InvalidRecord(f"node {user.ae_title} reconciles with it: it must stay a worklist")
        session.add(node)
    return node


def _reconciling(session: Session, pk: int) -> Node | None:
    return session.exec(select(Node).where(Node.reconcile_with_pk == pk)).first()


def delete_node(engine: Engine, pk: int) -> None:
    """A node goes with its permissions; rules and routes naming it must be removed first."""
    with writing(engine, f"node {pk} is still named by transfers") as session:
        node = session.get(Node, pk)
        if node is None:
            raise UnknownRecord(f"no node {pk}")
        used = select(DestinationRule).where(
            or_(col(DestinationRule.node_pk) == pk, col(DestinationRule.out_of_hours_node_pk) == pk)
        )
        if rule := session.exec(used).first():
            raise DuplicateRecord(f"destination rule {rule.pk} still names node {pk}")
        if route := session.exec(select(Route).where(Route.destination_node_pk == pk)).first():
            raise DuplicateRecord(f"route {route.called_ae_title} still names node {pk}")
        if user := _reconciling(session, pk):
            raise DuplicateRecord(f"node {user.ae_title} still reconciles with node {pk}")
        for permission in session.exec(select(NodePermission).where(NodePermission.node_pk == pk)):
            session.delete(permission)
        session.flush()
        session.delete(node)


def add_node_permission(
    engine: Engine,
    node_pk: int,
    subject_kind: str,
    subject: str,
    *,
    can_query: bool = False,
    can_write: bool = False,
) -> NodePermission:
    """`subject` is a user's email, a role name, or an institution code, by `subject_kind`."""
    if subject_kind not in SUBJECT_KINDS:
        raise InvalidRecord(f"subject kind must be one of {', '.join(SUBJECT_KINDS)}")
    subject = check_text(subject, "subject", 320, required=True)
    if subject_kind == "role" and subject not in {role.value for role in Role}:
        raise InvalidRecord(f"unknown role {subject!r}")
    if not (can_query or can_write):
        raise InvalidRecord("a permission allows query, write, or both")
    permission = NodePermission(
        node_pk=node_pk,
        subject_kind=subject_kind,
        subject=subject,
        can_query=can_query,
        can_write=can_write,
    )
    with writing(engine, "the node changed meanwhile") as session:
        if session.get(Node, node_pk) is None:
            raise UnknownRecord(f"no node {node_pk}")
        session.add(permission)
    return permission


def list_node_permissions(engine: Engine, node_pk: int) -> list[NodePermission]:
    query = select(NodePermission).where(NodePermission.node_pk == node_pk)
    with reading(engine) as session:
        return list(session.exec(query.order_by(col(NodePermission.pk))))


def remove_node_permission(engine: Engine, node_pk: int, pk: int) -> None:
    with writing(engine, "the node changed meanwhile") as session:
        permission = session.get(NodePermission, pk)
        if permission is None or permission.node_pk != node_pk:
            raise UnknownRecord(f"node {node_pk} has no permission {pk}")
        session.delete(permission)


def create_destination_rule(
    engine: Engine,
    institution_pk: int,
    *,
    node_pk: int | None = None,
    sender_institution_pk: int | None = None,
    window: str = "always",
    out_of_hours_node_pk: int | None = None,
    out_of_hours_to_worklist: bool = False,
    pseudonymised_only: bool = False,
) -> DestinationRule:
    """Nodes named must belong to the destination institution; None means its worklist."""
    if window not in WINDOWS:
        raise InvalidRecord(f"window must be one of {', '.join(WINDOWS)}")
    if window != "core" and (out_of_hours_node_pk is not None or out_of_hours_to_worklist):
        raise InvalidRecord("an out-of-hours destination belongs to a core-hours rule")
    if out_of_hours_node_pk is not None and out_of_hours_to_worklist:
        raise InvalidRecord("out of hours goes to a node or to the worklist, not both")
    rule = DestinationRule(
        institution_pk=institution_pk,
        node_pk=node_pk,
        sender_institution_pk=sender_institution_pk,
        window=window,
        out_of_hours_node_pk=out_of_hours_node_pk,
        out_of_hours_to_worklist=out_of_hours_to_worklist,
        pseudonymised_only=pseudonymised_only,
    )
    with writing(engine, "the rules changed meanwhile") as session:
        for pk in (institution_pk, sender_institution_pk):
            if pk is not None and session.get(Institution, pk) is None:
                raise UnknownRecord(f"no institution {pk}")
        for pk in (node_pk, out_of_hours_node_pk):
            node = session.get(Node, pk) if pk is not None else None
            if pk is not None and (node is None or node.institution_pk != institution_pk):
                raise UnknownRecord(f"institution {institution_pk} has no node {pk}")
        session.add(rule)
    return rule


def get_destination_rule(engine: Engine, pk: int) -> DestinationRule:
    with reading(engine) as session:
        rule = session.get(DestinationRule, pk)
    if rule is None:
        raise UnknownRecord(f"no destination rule {pk}")
    return rule


def list_destination_rules(
    engine: Engine, institution_pks: Collection[int] | None = None
) -> list[DestinationRule]:
    query = select(DestinationRule).order_by(col(DestinationRule.pk))
    if institution_pks is not None:
        query = query.where(col(DestinationRule.institution_pk).in_(list(institution_pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def delete_destination_rule(engine: Engine, pk: int) -> None:
    with writing(engine, "the rules changed meanwhile") as session:
        rule = session.get(DestinationRule, pk)
        if rule is None:
            raise UnknownRecord(f"no destination rule {pk}")
        session.delete(rule)


# --- direct-push routes ---------------------------------------------------------------------


def create_route(
    engine: Engine,
    called_ae_title: str,
    destination_institution_pk: int,
    *,
    destination_node_pk: int | None = None,
    quiet_seconds: int = 30,
    accept_unknown_callers: bool = False,
    description: str = "",
) -> Route:
    """A called AE title that forwards to an institution's worklist, or to one of its nodes.

    A route's AE title is a called one and a node's a calling one, so the two may coincide;
    that it differs from Ferry's own AE title is for the caller to check (it holds the settings).
    """
    called_ae_title = check_ae_title(called_ae_title)
    if not 1 <= quiet_seconds <= MAX_QUIET_SECONDS:
        raise InvalidRecord(f"quiet time must be 1-{MAX_QUIET_SECONDS} seconds")
    route = Route(
        called_ae_title=called_ae_title,
        destination_institution_pk=destination_institution_pk,
        destination_node_pk=destination_node_pk,
        quiet_seconds=quiet_seconds,
        accept_unknown_callers=accept_unknown_callers,
        description=check_text(description, "description", 256),
    )
    with writing(engine, f"route AE title {called_ae_title!r} is taken") as session:
        if session.get(Institution, destination_institution_pk) is None:
            raise UnknownRecord(f"no institution {destination_institution_pk}")
        node = session.get(Node, destination_node_pk) if destination_node_pk else None
        if destination_node_pk is not None and (
            node is None or node.institution_pk != destination_institution_pk
        ):
            raise UnknownRecord(
                f"institution {destination_institution_pk} has no node {destination_node_pk}"
            )
        taken = select(Route).where(Route.called_ae_title == called_ae_title)
        if session.exec(taken).first():
            raise DuplicateRecord(f"route AE title {called_ae_title!r} is taken")
        session.add(route)
    return route


def get_route(engine: Engine, pk: int) -> Route:
    with reading(engine) as session:
        route = session.get(Route, pk)
    if route is None:
        raise UnknownRecord(f"no route {pk}")
    return route


def find_route(engine: Engine, called_ae_title: str) -> Route:
    query = select(Route).where(Route.called_ae_title == called_ae_title.strip())
    with reading(engine) as session:
        route = session.exec(query).first()
    if route is None:
        raise UnknownRecord(f"no route with AE title {called_ae_title!r}")
    return route


def list_routes(engine: Engine, institution_pks: Collection[int] | None = None) -> list[Route]:
    """Routes into these destination institutions (all when None), by called AE title."""
    query = select(Route).order_by(col(Route.called_ae_title))
    if institution_pks is not None:
        query = query.where(col(Route.destination_institution_pk).in_(list(institution_pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def delete_route(engine: Engine, pk: int) -> None:
    """Transfers keep naming their route: a route that carried studies stays (409)."""
    with writing(engine, f"route {pk} is still named by transfers") as session:
        route = session.get(Route, pk)
        if route is None:
            raise UnknownRecord(f"no route {pk}")
        session.delete(route)
