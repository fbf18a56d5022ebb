"""Timing of the pure policy decision `policy.decide` over a snapshot of many institutions.

Each case is one call of `decide(principal, action, resource, context, snapshot)` whose answer
is known beforehand (allowed or not, the rule, the routing obligation); it is checked once
before timing, so a wrong answer is never measured. Cases are timed in rounds through the
whole mix, one `time.perf_counter_ns` pair around each call.
"""

from __future__ import annotations

import gc
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as clock

import numpy as np

from _http import UnexpectedAnswer
from _report import LOWER, Figure
from policy.decision import (
    Context,
    GrantFacts,
    InstitutionFacts,
    NodeFacts,
    PolicySnapshot,
    Resource,
    RuleFacts,
    decide,
)
from policy.hours import CoreHoursFacts
from policy.principal import Principal, PrincipalKind
from policy.roles import Action, Role, Scope

TIMEZONES = ("Europe/London", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
HOLIDAYS = tuple(date(2026, month, day) for month, day in ((1, 1), (4, 3), (5, 1), (12, 25)))
SENDERS_PER_DESTINATION = 4  # each institution takes from 4 others, to its worklist and a node
NODE_BASE = 1000  # node pks: NODE_BASE + 2 × institution (core) and + 1 (out of hours)
# Berlin (institution 1): Tuesday 10 March 2026 at 10:30 and 21:30, and Labour Day at 11:00.
IN_HOURS = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
OUT_OF_HOURS = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)
ON_HOLIDAY = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
PAST = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = datetime(2027, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One decision and the answer it must give."""

    key: str
    label: str
    principal: Principal
    action: Action
    resource: Resource
    context: Context
    allowed: bool
    rule: str
    obligation: str = ""  # e.g. route-to:worklist; empty: none checked


def build_snapshot(institutions: int) -> PolicySnapshot:
    """`institutions` institutions with core hours in five timezones, two nodes each, and
    destination rules from `SENDERS_PER_DESTINATION` senders to each worklist and first node."""
    facts = {
        pk: InstitutionFacts(
            pk,
            f"I{pk:02d}",
            hours=CoreHoursFacts(
                TIMEZONES[pk % len(TIMEZONES)], start=clock(8), end=clock(18), holidays=HOLIDAYS
            ),
        )
        for pk in range(1, institutions + 1)
    }
    nodes = {
        node: NodeFacts(node, pk, f"AE{node}")
        for pk in facts
        for node in (NODE_BASE + 2 * pk, NODE_BASE + 2 * pk + 1)
    }
    rules = []
    for pk in facts:
        for step in range(1, SENDERS_PER_DESTINATION + 1):
            sender = (pk + step - 1) % institutions + 1
            out_of_hours = NODE_BASE + 2 * pk + 1
            rules.append(RuleFacts(len(rules) + 1, pk, None, sender, "core", out_of_hours))
            rules.append(RuleFacts(len(rules) + 1, pk, NODE_BASE + 2 * pk, sender, "always"))
    return PolicySnapshot(facts, nodes, tuple(rules))


def _rule_pk(snapshot: PolicySnapshot, destination: int, node: int | None, sender: int) -> str:
    for rule in snapshot.rules:
        if (rule.institution_pk, rule.node_pk, rule.sender_institution_pk) == (
            destination,
            node,
            sender,
        ):
            return f"destination-rule:{rule.pk}"
    raise ValueError(f"no rule from {sender} to {destination}/{node}")


def _user(pk: int, name: str, institutions: Sequence[int], *roles: Role) -> Principal:
    return Principal(PrincipalKind.USER, pk, name, {i: frozenset(roles) for i in institutions})


def plan_cases(snapshot: PolicySnapshot) -> list[Case]:
    """The mix: studies through ownership, grants and neither; destinations in and out of hours."""
    count = len(snapshot.institutions)
    viewer = _user(1, "viewer", [1, 2], Role.VIEWER)
    many = _user(2, "receiver", range(count - 39, count + 1), Role.RECEIVER)  # the last 40
    sender = _user(3, "sender", [2], Role.SENDER)
    tool = Principal(
        PrincipalKind.API_CLIENT, 4, "ai-tool", {5: frozenset({Role.RECEIVER})},
        scopes=frozenset({Scope.READ}),
    )  # fmt: skip
    grants = (GrantFacts(17), GrantFacts(1, expires_at=PAST), GrantFacts(2, expires_at=FUTURE))
    many_grants = (
        *(GrantFacts(pk) for pk in range(2, 11)),  # institutions the user is not in
        GrantFacts(count, revoked_at=FUTURE),  # revoked later: still active now
    )
    refused = (GrantFacts(1, revoked_at=PAST), GrantFacts(2, expires_at=PAST), GrantFacts(9))
    now = Context(IN_HOURS, "127.0.0.1")
    destination, node = 1, NODE_BASE + 2
    elsewhere = count // 2  # takes from count/2+1 … count/2+4, never from institution 2
    worklist_rule = _rule_pk(snapshot, destination, None, 2)
    out_of_hours = f"route-to:node:{NODE_BASE + 3}"
    study = Resource.study
    dest = Resource.destination
    return [
        Case("study_owner", "study search via owner (user in 2 institutions)", viewer,
             Action.SEARCH, study("1.2.3.1", 2), now, True, "owner-membership"),
        Case("study_grant", "study read metadata via grant (3 grants)", viewer,
             Action.READ_METADATA, study("1.2.3.2", 30, grants), now, True, "active-grant"),
        Case("study_grant_many", "study download via grant (user in 40, 10 grants)", many,
             Action.DOWNLOAD, study("1.2.3.3", 1, many_grants), now, True, "active-grant"),
        Case("study_denied", "study read pixels, denied (expired, revoked, other)", viewer,
             Action.READ_PIXELS, study("1.2.3.4", 7, refused), now, False, "default-deny"),
        Case("study_scope", "study download, denied by the token's scope", tool,
             Action.DOWNLOAD, study("1.2.3.5", 5), now, False, "default-deny"),
        Case("dest_core", "send to worklist, in core hours", sender, Action.TRANSFER,
             dest(destination, None, 2), now, True, worklist_rule, "route-to:worklist"),
        Case("dest_out_of_hours", "send to worklist, out of hours (rerouted)", sender,
             Action.TRANSFER, dest(destination, None, 2), Context(OUT_OF_HOURS),
             True, worklist_rule, out_of_hours),
        Case("dest_holiday", "send to worklist on a public holiday (rerouted)", sender,
             Action.TRANSFER, dest(destination, None, 2), Context(ON_HOLIDAY),
             True, worklist_rule, out_of_hours),
        Case("dest_node", "send to a node, window always", sender, Action.TRANSFER,
             dest(destination, node, 2), now, True, _rule_pk(snapshot, destination, node, 2),
             f"route-to:node:{node}"),
        Case("dest_denied", "send to a node, denied (no rule: every rule read)", sender,
             Action.TRANSFER, dest(elsewhere, NODE_BASE + 2 * elsewhere, 2), now, False,
             "default-deny"),
        Case("dest_not_sender", "send, denied (viewer role only)", viewer, Action.TRANSFER,
             dest(destination, None, 1), now, False, "sender-role"),
    ]  # fmt: skip


def check_case(case: Case, snapshot: PolicySnapshot) -> None:
    decision = decide(case.principal, case.action, case.resource, case.context, snapshot)
    wrong = (
        decision.allowed != case.allowed
        or decision.rule != case.rule
        or (case.obligation and case.obligation not in decision.obligations)
    )
    if wrong:
        raise UnexpectedAnswer(
            f"{case.key}: decide answered allowed={decision.allowed} rule={decision.rule!r} "
            f"obligations={decision.obligations}; expected allowed={case.allowed} "
            f"rule={case.rule!r} {case.obligation}".rstrip()
        )


def time_decisions(
    cases: Sequence[Case], snapshot: PolicySnapshot, rounds: int, warmup: int
) -> dict[str, array[int]]:
    """Nanoseconds per call, by case; garbage collection left on, as in the server."""
    samples = {case.key: array("q") for case in cases}
    calls = [
        (samples[c.key], c.principal, c.action, c.resource, c.context) for c in cases
    ]  # bound once: the loop then costs a tuple unpacking, not attribute look-ups
    clock_ns = time.perf_counter_ns
    gc.collect()
    for number in range(warmup + rounds):
        timed = number >= warmup
        for into, principal, action, resource, context in calls:
            started = clock_ns()
            decide(principal, action, resource, context, snapshot)
            elapsed = clock_ns() - started
            if timed:
                into.append(elapsed)
    return samples


def clock_overhead_ns(count: int = 100_000) -> float:
    """Median of two back-to-back perf_counter_ns readings: included in every sample."""
    clock_ns = time.perf_counter_ns
    readings = array("q", (-(clock_ns() - clock_ns()) for _ in range(count)))
    return float(np.median(readings))


def decide_figures(
    cases: Sequence[Case], samples: dict[str, array[int]], overhead_ns: float
) -> list[Figure]:
    """p50 and p95 in µs per case, then the whole mix."""
    rows = [(case.key, case.label, np.asarray(samples[case.key])) for case in cases]
    rows.append(("mix", "the whole mix", np.concatenate([r[2] for r in rows])))
    figures = []
    for key, label, ns in rows:
        us = ns / 1000.0
        raw = {
            "n": len(us),
            "percentiles_us": {
                f"p{q}": round(float(np.percentile(us, q)), 3) for q in (1, 5, 25, 50, 75, 95, 99)
            },
            "mean_us": round(float(us.mean()), 3),
            "max_us": round(float(us.max()), 3),
            "clock_overhead_ns": overhead_ns,
        }
        for q in (50, 95):
            value = float(np.percentile(us, q))
            figures.append(
                Figure("decide", f"decide.{key}.p{q}", f"{label} p{q}", "µs", LOWER, value, raw)
            )
    return figures
