"""The principal a request acts as: a user, an API client, or a DICOM node, with its memberships."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from policy.roles import SCOPE_ACTIONS, SYSTEM_ADMIN_ACTIONS, Action, Role, Scope, actions_of


class PrincipalKind(StrEnum):
    USER = "user"
    API_CLIENT = "api-client"
    NODE = "node"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """Built by authentication from the database; immutable for the rest of the request."""

    kind: PrincipalKind
    id: int | None
    name: str
    memberships: Mapping[int, frozenset[Role]] = field(default_factory=dict)
    system_admin: bool = False
    scopes: frozenset[Scope] | None = None  # API tokens only; None: not narrowed
    active: bool = True
    # A viewer link's token: only these studies, whatever the memberships allow (None: any).
    studies: frozenset[str] | None = None
    # The sign-in session a person's credentials belong to; what it issues ends with it.
    session_id: str | None = None

    @property
    def label(self) -> str:
        """How audit and explanations name the principal."""
        return f"{self.kind.value}:{self.name}" if self.id is not None else self.kind.value

    def actions_in(self, institution_pk: int) -> frozenset[Action]:
        """What this principal may do with an institution's studies, scopes applied."""
        if not self.active:
            return frozenset()
        allowed = actions_of(self.memberships.get(institution_pk, frozenset()))
        if self.system_admin:
            allowed |= SYSTEM_ADMIN_ACTIONS
        if self.scopes is not None:
            narrowed: set[Action] = set()
            for scope in self.scopes:
                narrowed |= SCOPE_ACTIONS[scope]
            allowed &= frozenset(narrowed)
        return allowed

    def institutions_for(self, action: Action) -> frozenset[int]:
        return frozenset(pk for pk in self.memberships if action in self.actions_in(pk))


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS, None, "anonymous", active=False)


class NodeRights(Protocol):
    """What a node row (or its facts) tells about the node acting as a principal."""

    @property
    def pk(self) -> int | None: ...
    @property
    def ae_title(self) -> str: ...
    @property
    def institution_pk(self) -> int: ...
    @property
    def can_query(self) -> bool: ...
    @property
    def can_write(self) -> bool: ...


def node_principal(node: NodeRights) -> Principal:
    """A DICOM node acts for its institution, narrowed to the rights it was given."""
    scopes: set[Scope] = set()
    if node.can_query:
        scopes |= {Scope.READ, Scope.DOWNLOAD}
    if node.can_write:
        scopes |= {Scope.WRITE, Scope.TRANSFER}
    roles = frozenset({Role.RECEIVER, Role.SENDER})
    return Principal(
        PrincipalKind.NODE,
        node.pk,
        node.ae_title,
        memberships={node.institution_pk: roles},
        scopes=frozenset(scopes),
    )
