"""Roles, actions, and which roles allow which actions (the matrix administrators reason with)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

_Name = TypeVar("_Name", bound=StrEnum)


class Role(StrEnum):
    INSTITUTION_ADMIN = "admin"
    SENDER = "sender"
    RECEIVER = "receiver"
    VIEWER = "viewer"
    REQUESTER = "requester"
    AUDITOR = "auditor"


class Action(StrEnum):
    SEARCH = "search"
    READ_METADATA = "read-metadata"
    READ_PIXELS = "read-pixels"
    DOWNLOAD = "download"
    STORE = "store"
    DELETE = "delete"
    TRANSFER = "transfer"
    REQUEST = "request"
    ANSWER = "answer"
    ADMINISTER = "administer"
    AUDIT = "audit"
    HOLD = "hold"  # freeze a study or a patient's studies against retention (legal, clinical)


class Scope(StrEnum):
    """What an API token may be used for, on top of its client's roles."""

    READ = "read"
    WRITE = "write"
    DOWNLOAD = "download"
    TRANSFER = "transfer"
    DELETE = "delete"  # only with a role that may delete (institution admin)
    AUDIT = "audit"  # read the oversight and audit trail (with the auditor or admin role)
    HOLD = "hold"  # place and release retention holds (a legal or clinical hold tool)


_VIEW = frozenset({Action.SEARCH, Action.READ_METADATA, Action.READ_PIXELS})

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: _VIEW,
    Role.RECEIVER: _VIEW | {Action.DOWNLOAD},
    Role.SENDER: _VIEW | {Action.STORE, Action.TRANSFER, Action.ANSWER},
    Role.REQUESTER: frozenset({Action.REQUEST}),
    Role.AUDITOR: frozenset({Action.AUDIT}),
    Role.INSTITUTION_ADMIN: _VIEW
    | {
        Action.DOWNLOAD,
        Action.DELETE,
        Action.ANSWER,
        Action.ADMINISTER,
        Action.AUDIT,
        Action.HOLD,
    },
}

SCOPE_ACTIONS: dict[Scope, frozenset[Action]] = {
    Scope.READ: _VIEW,
    Scope.DOWNLOAD: frozenset({Action.DOWNLOAD}),
    Scope.WRITE: frozenset({Action.STORE}),
    Scope.TRANSFER: frozenset({Action.TRANSFER}),
    Scope.DELETE: frozenset({Action.DELETE}),
    Scope.AUDIT: frozenset({Action.AUDIT}),
    Scope.HOLD: frozenset({Action.HOLD}),
}

# A system administrator runs the service; patient data needs a membership like anyone's.
SYSTEM_ADMIN_ACTIONS = frozenset({Action.ADMINISTER, Action.AUDIT})


def actions_of(roles: frozenset[Role]) -> frozenset[Action]:
    allowed: set[Action] = set()
    for role in roles:
        allowed |= ROLE_ACTIONS[role]
    return frozenset(allowed)


def _parse_names(kind: type[_Name], text: str, noun: str) -> frozenset[_Name]:
    names: set[_Name] = set()
    for item in text.split(","):
        name = item.strip().lower()
        if not name:
            continue
        try:
            names.add(kind(name))
        except ValueError:
            known = ", ".join(member.value for member in kind)
            raise ValueError(f"unknown {noun} {name!r}; {noun}s are {known}") from None
    return frozenset(names)


def parse_roles(text: str) -> frozenset[Role]:
    """`sender,receiver` -> roles; ValueError naming an unknown role."""
    return _parse_names(Role, text, "role")


def parse_scopes(text: str) -> frozenset[Scope]:
    """`read,download` -> scopes; ValueError naming an unknown scope."""
    return _parse_names(Scope, text, "scope")
