"""Nodes (DICOM application entities), who may query or write them, and destination rules."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, or_
from sqlmodel import col, select

from policy.models import DestinationRule, Institution, Node, NodePermission
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


def check_ae_title(title: str) -> str:
    """PS3.5 AE: 1-16 characters, no backslash or control characters, not all spaces."""
    title = title.strip()
    if not 1 <= len(title) <= 16 or "\\" in title or not title.isprintable():
        raise InvalidRecord(f"AE title {title!r} must be 1-16 printable characters, no backslash")
    return title


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidRecord(f"port {port} is outside 1-65535")
    return port


def create_node(
    engine: Engine,
    institution_pk: int,
    ae_title: str,
    host: str,
    port: int,
    *,
    tls: bool = False,
    description: str = "",
    restricted: bool = True,
) -> Node:
    ae_title = check_ae_title(ae_title)
    node = Node(
        institution_pk=institution_pk,
        ae_title=ae_title,
        host=check_text(host, "host", 256, required=True),
        port=_check_port(port),
        tls=tls,
        description=check_text(description, "description", 256),
        restricted=restricted,
    )
    with writing(engine, f"AE title {ae_title!r} is taken") as session:
        if session.get(Institution, institution_pk) is None:
            raise UnknownRecord(f"no institution {institution_pk}")
        if session.exec(select(Node).where(Node.ae_title == ae_title)).first():
            raise DuplicateRecord(f"AE title {ae_title!r} is taken")
        session.add(node)
    return node


def get_node(engine: Engine, pk: int) -> Node:
    with reading(engine) as session:
        node = session.get(Node, pk)
    if node is None:
        raise UnknownRecord(f"no node {pk}")
    return node


def list_nodes(engine: Engine, institution_pks: Collection[int] | None = None) -> list[Node]:
    query = select(Node).order_by(col(Node.ae_title))
    if institution_pks is not None:
        query = query.where(col(Node.institution_pk).in_(list(institution_pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def update_node(
    engine: Engine,
    pk: int,
    *,
    host: str | None = None,
    port: int | None = None,
    tls: bool | None = None,
    description: str | None = None,
    restricted: bool | None = None,
) -> Node:
    with writing(engine, "the node changed meanwhile") as session:
        node = session.get(Node, pk)
        if node is None:
            raise UnknownRecord(f"no node {pk}")
        if host is not None:
            node.host = check_text(host, "host", 256, required=True)
        if port is not None:
            node.port = _check_port(port)
        if description is not None:
            node.description = check_text(description, "description", 256)
        for field, value in (("tls", tls), ("restricted", restricted)):
            if value is not None:
                setattr(node, field, value)
        session.add(node)
    return node


def delete_node(engine: Engine, pk: int) -> None:
    """A node goes with its permissions; rules that still send to it must be removed first."""
    with writing(engine, "the node changed meanwhile") as session:
        node = session.get(Node, pk)
        if node is None:
            raise UnknownRecord(f"no node {pk}")
        used = select(DestinationRule).where(
            or_(col(DestinationRule.node_pk) == pk, col(DestinationRule.out_of_hours_node_pk) == pk)
        )
        if rule := session.exec(used).first():
            raise DuplicateRecord(f"destination rule {rule.pk} still names node {pk}")
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
