"""The dry run: what the next sweeps delete, and when, read with the sweeper's own rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retention.rules import Fate
from retention.sweeper import Sweeper


@dataclass(frozen=True)
class PlanRow:
    due: str  # when (UTC), or "now"
    what: str  # delete study, remove grant, held
    study_uid: str
    holder: str  # the institution pk whose time it is, or the holds


def _when(moment: datetime, now: datetime) -> str:
    if moment <= now:
        return "now"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _rows(fate: Fate, now: datetime, horizon: datetime) -> Iterator[PlanRow]:
    uid = fate.study.study_uid
    if fate.held_by:
        yield PlanRow("-", "held", uid, "holds " + ",".join(map(str, fate.held_by)))
        return
    last = fate.last_due_at
    if fate.delete_study or (last is not None and last <= horizon):
        yield PlanRow(_when(last or now, now), "delete study", uid, "last holder")
        return
    for due in fate.dues:
        if due.holding.grant_pk is not None and due.due_at <= horizon:
            yield PlanRow(_when(due.due_at, now), "remove grant", uid,
                          str(due.holding.institution_pk))  # fmt: skip


def plan_rows(
    sweeper: Sweeper, now: datetime, institution_pk: int | None, days: int
) -> list[PlanRow]:
    """Everything due by `now + days`, soonest first; held studies last."""
    horizon = now + timedelta(days=days)
    rows = [
        row
        for fates in sweeper.iter_fates(now, institution_pk)
        for fate in fates
        for row in _rows(fate, now, horizon)
    ]
    return sorted(rows, key=lambda r: (r.due == "-", r.due != "now", r.due))
