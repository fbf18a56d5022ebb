"""The policy snapshot `decide()` reads: institutions with their hours, nodes, destination rules."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import Engine
from sqlmodel import col, select

from policy.decision import InstitutionFacts, PolicySnapshot, RuleFacts
from policy.hours import CoreHoursFacts, parse_clock
from policy.models import CoreHours, DestinationRule, Holiday, Institution, Node
from policy.store._base import reading
from policy.store.destinations import node_facts


def _hours(
    institution: Institution, hours: CoreHours | None, days: frozenset[date]
) -> CoreHoursFacts:
    if hours is None:
        return CoreHoursFacts(timezone=institution.timezone, holidays=days)
    return CoreHoursFacts(
        timezone=institution.timezone,
        weekdays=frozenset(int(day) for day in hours.weekdays.split(",") if day),
        start=parse_clock(hours.start),
        end=parse_clock(hours.end),
        holidays=days,
    )


def snapshot(engine: Engine) -> PolicySnapshot:
    """Everything policy-wide in five queries; small enough to load per request or cache briefly."""
    with reading(engine) as session:
        institutions = list(session.exec(select(Institution)))
        hours = {row.institution_pk: row for row in session.exec(select(CoreHours))}
        holidays: defaultdict[int, set[date]] = defaultdict(set)
        for holiday in session.exec(select(Holiday)):
            holidays[holiday.institution_pk].add(holiday.day)
        nodes = list(session.exec(select(Node)))
        rules = list(session.exec(select(DestinationRule).order_by(col(DestinationRule.pk))))
    return PolicySnapshot(
        institutions={
            i.pk: InstitutionFacts(
                pk=i.pk,
                code=i.code,
                parent_pk=i.parent_pk,
                worklist_restricted=i.worklist_restricted,
                hours=_hours(i, hours.get(i.pk), frozenset(holidays.get(i.pk, ()))),
            )
            for i in institutions
            if i.pk is not None
        },
        nodes={n.pk: node_facts(n) for n in nodes if n.pk is not None},
        rules=tuple(
            RuleFacts(
                pk=r.pk or 0,
                institution_pk=r.institution_pk,
                node_pk=r.node_pk,
                sender_institution_pk=r.sender_institution_pk,
                window=r.window,
                out_of_hours_node_pk=r.out_of_hours_node_pk,
                out_of_hours_to_worklist=r.out_of_hours_to_worklist,
                pseudonymised_only=r.pseudonymised_only,
            )
            for r in rules
        ),
    )
