"""What retention has due: given a study's holdings, the periods, the holds and now, decide.

Pure: no database, no clock. Each institution that holds a study (its owner, and each
institution with a live grant) has its own clock, started when the study arrived there and
running for its period for that kind of holding. When a holding's time is up, its grant goes;
when the last holding's time is up, the study goes (index, blobs, caches, every grant). A live
hold placed by one of the study's holders freezes the whole study: nothing of it goes, and no
warning is sent. A warning goes to a holder once its deadline is within its warning lead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from exchange.retention_models import HoldingKind
from exchange.retention_terms import Terms


@dataclass(frozen=True)
class Holding:
    """One institution's hold on a study: the owner's (no grant) or a live grant's."""

    institution_pk: int | None
    kind: HoldingKind
    arrived_at: datetime
    grant_pk: int | None = None
    transfer_pk: int | None = None  # the transfer that brought it, for the warning's link


@dataclass(frozen=True)
class StudyHoldings:
    study_uid: str
    patient_id: str
    issuer_of_patient_id: str
    holdings: tuple[Holding, ...]
    study_pk: int = 0


@dataclass(frozen=True)
class HoldFacts:
    """A live hold: by which institution, on a study (uid) or a patient (id, issuer)."""

    pk: int
    institution_pk: int
    study_uid: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""

    def covers(self, study: StudyHoldings) -> bool:
        holders = {h.institution_pk for h in study.holdings}
        if self.institution_pk not in holders:
            return False  # a hold reaches only what its institution holds
        if self.study_uid:
            return self.study_uid == study.study_uid
        return (self.patient_id, self.issuer_of_patient_id) == (
            study.patient_id,
            study.issuer_of_patient_id,
        )


@dataclass(frozen=True)
class Due:
    """One holding's deadline and whether it has come."""

    holding: Holding
    due_at: datetime
    warn_at: datetime


@dataclass(frozen=True)
class Fate:
    """What the sweeper does with one study now."""

    study: StudyHoldings
    delete_study: bool = False
    expired_grants: tuple[Due, ...] = ()  # grants to remove (their holder's time is up)
    warnings: tuple[Due, ...] = ()  # holders to warn (their deadline is near)
    held_by: tuple[int, ...] = ()  # pks of the holds that freeze it
    dues: tuple[Due, ...] = ()

    @property
    def last_due_at(self) -> datetime | None:
        return max((d.due_at for d in self.dues), default=None)

    @property
    def changes_something(self) -> bool:
        return self.delete_study or bool(self.expired_grants)


def deadlines(study: StudyHoldings, terms: Mapping[int, Terms], default: Terms) -> tuple[Due, ...]:
    dues = []
    for holding in study.holdings:
        own = terms.get(holding.institution_pk or 0, default)
        arrived = holding.arrived_at
        dues.append(
            Due(holding, own.due_at(holding.kind, arrived), own.warn_at(holding.kind, arrived))
        )
    return tuple(dues)


def decide_fate(
    study: StudyHoldings,
    terms: Mapping[int, Terms],
    default: Terms,
    holds: Iterable[HoldFacts],
    now: datetime,
) -> Fate:
    dues = deadlines(study, terms, default)
    held_by = tuple(sorted(hold.pk for hold in holds if hold.covers(study)))
    if held_by:
        return Fate(study, held_by=held_by, dues=dues)
    if not dues:  # an index row nobody holds: nothing keeps it
        return Fate(study, delete_study=True)
    expired = tuple(d for d in dues if d.due_at <= now)
    if len(expired) == len(dues):
        return Fate(study, delete_study=True, dues=dues)
    last = max(d.due_at for d in dues)
    # An owner keeps its study while others hold it: only a grant, or the last holding, ends.
    warnings = tuple(
        d
        for d in dues
        if d.warn_at <= now < d.due_at and (d.holding.grant_pk is not None or d.due_at >= last)
    )
    grants = tuple(d for d in expired if d.holding.grant_pk is not None)
    return Fate(study, expired_grants=grants, warnings=warnings, dues=dues)
