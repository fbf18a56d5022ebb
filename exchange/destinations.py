"""Where a sender may send now: every other institution's worklist and nodes, each decided.

The same decision as sending (`exchange.routing.decide_route`: destination rules, core and out
of hours in the destination's time zone, holidays), asked for every destination at the given
moment; what is left out says why, and what is allowed says where it will actually go (out of
hours a rule may send to another node or to the worklist).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from exchange.routing import Target, decide_route
from foundation.errors import InvalidQuery
from policy.decision import PSEUDONYMISED_ONLY, PolicySnapshot
from policy.principal import Principal
from policy.store import list_nodes


def find_node(policy: PolicySnapshot, institution_pk: int, ae_title: str) -> int | None:
    """The node with this AE title if it is this institution's (another's looks missing)."""
    for pk, node in policy.nodes.items():
        if node.ae_title == ae_title and node.institution_pk == institution_pk:
            return pk
    return None


def node_of(policy: PolicySnapshot, institution_pk: int, ae_title: str) -> int:
    """As `find_node`, or 400: a node named in a body that the institution does not have."""
    found = find_node(policy, institution_pk, ae_title)
    if found is None:
        raise InvalidQuery(f"the institution has no node {ae_title[:16]!r}")
    return found


@dataclass(frozen=True)
class DestinationOption:
    institution_pk: int
    institution: str  # its code
    node_pk: int | None  # None: the worklist
    ae_title: str
    allowed: bool
    reason: str
    rule: str
    goes_to_node_pk: int | None = None  # where an allowed send goes now (None: the worklist)
    pseudonymised_only: bool = False  # allowed for pseudonymised copies only


def list_destinations(
    engine: Engine,
    principal: Principal,
    sender_pk: int,
    now: datetime,
    policy: PolicySnapshot,
) -> list[DestinationOption]:
    """Worklists first, then nodes, by institution code."""
    options: list[DestinationOption] = []
    nodes = [n for n in list_nodes(engine) if n.institution_pk != sender_pk]
    others = sorted(
        (facts for pk, facts in policy.institutions.items() if pk != sender_pk),
        key=lambda facts: facts.code,
    )
    for facts in others:
        options.append(_option(principal, sender_pk, facts.pk, facts.code, None, "", now, policy))
    codes = {pk: facts.code for pk, facts in policy.institutions.items()}
    for node in sorted(nodes, key=lambda n: (codes.get(n.institution_pk, ""), n.ae_title)):
        code = codes.get(node.institution_pk, "")
        if not node.can_write:
            reason = f"node {node.ae_title} takes no deliveries (it has no write right)"
            options.append(
                DestinationOption(
                    node.institution_pk, code, node.pk, node.ae_title, False, reason, "node-rights"
                )
            )
            continue
        options.append(
            _option(
                principal, sender_pk, node.institution_pk, code, node.pk, node.ae_title, now,
                policy,
            )
        )  # fmt: skip
    return options


def _option(
    principal: Principal,
    sender_pk: int,
    institution_pk: int,
    code: str,
    node_pk: int | None,
    ae_title: str,
    now: datetime,
    policy: PolicySnapshot,
) -> DestinationOption:
    decision, target = decide_route(
        principal, sender_pk, institution_pk, Target(node_pk), now, policy
    )
    copies_only = not decision.allowed and decision.rule == PSEUDONYMISED_ONLY
    if copies_only:
        decision, target = decide_route(
            principal, sender_pk, institution_pk, Target(node_pk), now, policy,
            pseudonymised=True,
        )  # fmt: skip
    return DestinationOption(
        institution_pk,
        code,
        node_pk,
        ae_title,
        decision.allowed,
        decision.reason,
        decision.rule,
        target.node_pk if decision.allowed else None,
        copies_only and decision.allowed,
    )
