"""Who is calling: the calling AE title names a node, the node its institution and its rights.

Looked up once per association, at A-ASSOCIATE-RQ, from the database (no cached copy to go
stale between processes). The called AE title is Ferry's own or a route's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from policy.decision import NodeFacts
from policy.models import Route
from policy.principal import ANONYMOUS, Principal, node_principal
from policy.store import UnknownRecord, destinations


@dataclass(frozen=True)
class RouteFacts:
    pk: int
    called_ae_title: str
    destination_institution_pk: int
    destination_node_pk: int | None
    quiet_seconds: int
    accept_unknown_callers: bool

    @classmethod
    def of(cls, route: Route) -> RouteFacts:
        return cls(
            pk=route.pk or 0,
            called_ae_title=route.called_ae_title,
            destination_institution_pk=route.destination_institution_pk,
            destination_node_pk=route.destination_node_pk,
            quiet_seconds=route.quiet_seconds,
            accept_unknown_callers=route.accept_unknown_callers,
        )


@dataclass(frozen=True)
class Caller:
    """One association's peer: its node (None when unknown), principal and the route it called."""

    calling_ae_title: str
    called_ae_title: str
    address: str
    node: NodeFacts | None
    route: RouteFacts | None
    principal: Principal

    @property
    def label(self) -> str:
        return self.principal.label if self.node else f"ae:{self.calling_ae_title}"

    @property
    def institution_pk(self) -> int | None:
        return self.node.institution_pk if self.node else None


def find_node(engine: Engine, ae_title: str) -> NodeFacts | None:
    try:
        return destinations.node_facts(destinations.find_node(engine, ae_title))
    except UnknownRecord:
        return None


def get_node(engine: Engine, pk: int) -> NodeFacts | None:
    try:
        return destinations.node_facts(destinations.get_node(engine, pk))
    except UnknownRecord:
        return None


def find_route(engine: Engine, called_ae_title: str) -> RouteFacts | None:
    try:
        return RouteFacts.of(destinations.find_route(engine, called_ae_title))
    except UnknownRecord:
        return None


def identify(
    engine: Engine, calling: str, called: str, address: str, own_ae_title: str
) -> tuple[Caller | None, str]:
    """The caller, or None and why the called AE is not ours (then the association is rejected)."""
    route = None if called == own_ae_title else find_route(engine, called)
    if called != own_ae_title and route is None:
        return None, f"called AE title {called!r} is neither Ferry's nor a route's"
    node = find_node(engine, calling)
    principal = ANONYMOUS if node is None else node_principal(node)
    return Caller(calling, called, address, node, route, principal), ""
