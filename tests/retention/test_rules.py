"""What retention has due, as tables: one line a case (the pure rules, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exchange.retention_defaults import RetentionDefaults
from exchange.retention_models import HoldingKind
from exchange.retention_terms import Terms, days_left, terms_of
from retention.rules import HoldFacts, Holding, StudyHoldings, decide_fate

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # the study arrives at A
A, B, C = 1, 2, 3
DEFAULT = Terms()  # 15 days everywhere, warned 2 days before
LONG_B = {B: Terms(worklist_days=30, node_days=5, upload_days=15, warn_days=3)}


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def own(at: float = 0) -> Holding:
    return Holding(A, HoldingKind.UPLOAD, day(at))


def grant(holder: int, at: float, pk: int, kind: HoldingKind = HoldingKind.WORKLIST) -> Holding:
    return Holding(holder, kind, day(at), grant_pk=pk, transfer_pk=100 + pk)


def study(*holdings: Holding) -> StudyHoldings:
    return StudyHoldings("1.2.3", "P1", "ISS", holdings, 7)


STUDY_HOLD = HoldFacts(1, A, study_uid="1.2.3")
PATIENT_HOLD = HoldFacts(2, A, patient_id="P1", issuer_of_patient_id="ISS")
OTHER_PATIENT = HoldFacts(3, A, patient_id="P1", issuer_of_patient_id="OTHER")
HOLD_BY_C = HoldFacts(4, C, study_uid="1.2.3")  # C holds nothing of the study
HOLD_BY_B = HoldFacts(5, B, study_uid="1.2.3")

CASES = [
    # holdings, terms, holds, now (days after T0), deleted, grants removed, warned holders, held
    ((own(),), {}, (), 12.9, False, (), (), ()),
    ((own(),), {}, (), 13, False, (), (A,), ()),  # 2 days before: warned
    ((own(),), {}, (), 14.99, False, (), (A,), ()),
    ((own(),), {}, (), 15, True, (), (), ()),  # due: deleted
    ((own(),), {}, (), 400, True, (), (), ()),
    ((own(),), {}, (STUDY_HOLD,), 400, False, (), (), (1,)),  # held: kept, no warning
    ((own(),), {}, (PATIENT_HOLD,), 400, False, (), (), (2,)),
    ((own(),), {}, (OTHER_PATIENT,), 400, True, (), (), ()),  # another issuer's patient
    ((own(),), {}, (HOLD_BY_C,), 400, True, (), (), ()),  # a hold reaches only what C holds
    # Received twice: each grant has its own clock; the study goes with the last one.
    ((own(), grant(B, 0, 11), grant(C, 10, 12)), {}, (), 15, False, (11,), (), ()),
    ((own(), grant(B, 0, 11), grant(C, 10, 12)), {}, (), 23.5, False, (11,), (C,), ()),
    ((own(), grant(B, 0, 11), grant(C, 10, 12)), {}, (), 25, True, (), (), ()),
    # The owner's time is up first: it keeps its study while a receiver holds it, unwarned.
    ((own(), grant(B, 5, 11)), {}, (), 14, False, (), (), ()),
    ((own(), grant(B, 5, 11)), {}, (), 18, False, (), (B,), ()),
    # Each institution's own period and lead; per kind of holding.
    ((own(), grant(B, 0, 11)), LONG_B, (), 27, False, (), (B,), ()),
    ((own(), grant(B, 0, 11)), LONG_B, (), 30, True, (), (), ()),
    ((own(), grant(B, 0, 11, HoldingKind.NODE)), LONG_B, (), 5, False, (11,), (), ()),
    ((own(), grant(B, 0, 11, HoldingKind.NODE)), LONG_B, (), 2, False, (), (B,), ()),
    # A hold by a receiver freezes the whole study, its own grant included.
    ((own(), grant(B, 0, 11)), {}, (HOLD_BY_B,), 99, False, (), (), (5,)),
]


@pytest.mark.parametrize(
    ("holdings", "terms", "holds", "now", "deleted", "grants", "warned", "held"), CASES
)
def test_fates(holdings, terms, holds, now, deleted, grants, warned, held) -> None:
    fate = decide_fate(study(*holdings), terms, DEFAULT, holds, day(now))
    assert fate.delete_study is deleted
    assert tuple(d.holding.grant_pk for d in fate.expired_grants) == grants
    assert tuple(d.holding.institution_pk for d in fate.warnings) == warned
    assert fate.held_by == held


def test_a_study_nobody_holds_goes() -> None:
    assert decide_fate(study(), {}, DEFAULT, (), T0).delete_study


@pytest.mark.parametrize(
    ("days", "max_days", "own_days", "effective"),
    [
        (15, 3650, None, 15),  # the system default
        (15, 3650, 40, 40),  # the institution's own
        (15, 30, 40, 30),  # never past the system's ceiling
        (60, 30, None, 30),  # the default too
    ],
)
def test_the_ceiling_caps_every_period(days, max_days, own_days, effective) -> None:
    from exchange.retention_models import RetentionPolicy

    row = RetentionPolicy(institution_pk=A, worklist_days=own_days, updated_at=T0)
    terms = terms_of(row, RetentionDefaults(days=days, max_days=max_days))
    assert terms.days(HoldingKind.WORKLIST) == effective


@pytest.mark.parametrize(
    ("now", "left"), [(0, 15), (0.5, 15), (14, 1), (14.999, 1), (15, 0), (99, 0)]
)
def test_days_left_round_up_and_stop_at_zero(now, left) -> None:
    assert days_left(DEFAULT.due_at(HoldingKind.WORKLIST, T0), day(now)) == left
