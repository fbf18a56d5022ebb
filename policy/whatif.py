"""What-if: who gains and who loses access to what, if a proposed rule change were made.

Pure: both worlds are passed in (principals, studies, destinations, snapshot) and every
decision is evaluated in each; the differences are the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from policy.decision import Context, Decision, PolicySnapshot, Resource, decide
from policy.principal import Principal
from policy.roles import Action

STUDY_ACTIONS = (Action.SEARCH, Action.READ_PIXELS, Action.DOWNLOAD, Action.DELETE)


@dataclass(frozen=True)
class World:
    principals: Sequence[Principal]
    resources: Sequence[Resource]
    snapshot: PolicySnapshot = field(default_factory=PolicySnapshot)


@dataclass(frozen=True)
class Change:
    principal: str
    action: Action
    resource: str
    gained: bool  # False: lost
    before: Decision
    after: Decision

    def describe(self) -> str:
        verb = "gains" if self.gained else "loses"
        return f"{self.principal} {verb} {self.action} on {self.resource} ({self.after.rule})"


def _resource_label(resource: Resource) -> str:
    if resource.study_uid:
        return f"study {resource.study_uid}"
    if resource.node_pk is not None:
        return f"node {resource.node_pk} of institution {resource.institution_pk}"
    return f"institution {resource.institution_pk}"


def _key(principal: Principal) -> tuple[str, int | None]:
    return (principal.kind.value, principal.id)


def what_if(
    before: World,
    after: World,
    context: Context,
    actions: Iterable[Action] = STUDY_ACTIONS,
) -> list[Change]:
    """Every (principal, action, resource) whose decision differs between the two worlds."""
    actions = tuple(actions)
    after_principals = {_key(p): p for p in after.principals}
    before_principals = {_key(p): p for p in before.principals}
    resources_after = {_resource_label(r): r for r in after.resources}
    resources_before = {_resource_label(r): r for r in before.resources}
    changes: list[Change] = []
    for key in sorted(set(before_principals) | set(after_principals), key=str):
        old_principal = before_principals.get(key)
        new_principal = after_principals.get(key)
        label = (new_principal or old_principal).label  # type: ignore[union-attr]
        for name in sorted(set(resources_before) | set(resources_after)):
            for action in actions:
                old = _decision(old_principal, action, resources_before.get(name), context, before)
                new = _decision(new_principal, action, resources_after.get(name), context, after)
                if old.allowed != new.allowed:
                    changes.append(Change(label, action, name, new.allowed, old, new))
    return changes


_ABSENT = Decision(False, "absent", "not in this world")


def _decision(
    principal: Principal | None,
    action: Action,
    resource: Resource | None,
    context: Context,
    world: World,
) -> Decision:
    if principal is None or resource is None:
        return _ABSENT
    if resource.study_uid:
        return decide(principal, action, resource, context, world.snapshot)
    if action is Action.TRANSFER:
        return decide(principal, action, resource, context, world.snapshot)
    return _ABSENT
