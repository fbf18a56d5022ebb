"""Holds: an institution freezes a study, or a patient's studies, against deletion until a date.

Placing and releasing are checked here (reason, end date, the study or patient being one the
institution holds) and audited by the caller; whether a principal may place one is the
policy's `decide()` (Action.HOLD), asked at each entrance.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from archive.models import Patient, Study, StudyGrant
from exchange.retention_models import HOLD_REASON_MAX_CHARS, RetentionHold
from foundation.clock import as_utc
from foundation.grants import grant_is_live
from policy.store import InvalidRecord, UnknownRecord, check_text


@dataclass(frozen=True)
class NewHold:
    institution_pk: int
    reason: str
    until: datetime
    study_uid: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""


def check_hold(new: NewHold, now: datetime) -> NewHold:
    """The hold as it will be stored, or InvalidRecord with the reason."""
    if bool(new.study_uid) == bool(new.patient_id):
        raise InvalidRecord("a hold names either a study or a patient, not both or neither")
    if new.issuer_of_patient_id and not new.patient_id:
        raise InvalidRecord("an issuer of patient ID goes with a patient ID")
    for name in ("study_uid", "patient_id", "issuer_of_patient_id"):
        check_text(getattr(new, name), name, 64)
    reason = check_text(new.reason, "reason", HOLD_REASON_MAX_CHARS, required=True)
    if as_utc(new.until) <= now:
        raise InvalidRecord("a hold's end date must be in the future")
    return NewHold(
        new.institution_pk,
        reason,
        as_utc(new.until),
        new.study_uid,
        new.patient_id,
        new.issuer_of_patient_id,
    )


def place_hold(engine: Engine, new: NewHold, *, actor: str, now: datetime) -> RetentionHold:
    checked = check_hold(new, now)
    hold = RetentionHold(
        institution_pk=checked.institution_pk,
        study_instance_uid=checked.study_uid,
        patient_id=checked.patient_id,
        issuer_of_patient_id=checked.issuer_of_patient_id,
        reason=checked.reason,
        until=checked.until,
        created_at=now,
        created_by=actor[:256],
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(hold)
        session.commit()
        return hold


def get_hold(engine: Engine, pk: int) -> RetentionHold:
    with Session(engine, expire_on_commit=False) as session:
        hold = session.get(RetentionHold, pk)
    if hold is None:
        raise UnknownRecord(f"no hold {pk}")
    return hold


def release_hold(engine: Engine, pk: int, *, actor: str, now: datetime) -> RetentionHold:
    """Ends a hold now; releasing one already released changes nothing."""
    with Session(engine, expire_on_commit=False) as session:
        hold = session.get(RetentionHold, pk)
        if hold is None:
            raise UnknownRecord(f"no hold {pk}")
        if hold.released_at is None:
            hold.released_at, hold.released_by = now, actor[:256]
            session.add(hold)
            session.commit()
        return hold


def live_hold_clause(now: datetime) -> object:
    return and_(col(RetentionHold.released_at).is_(None), col(RetentionHold.until) > now)


def list_holds(
    engine: Engine, institution_pks: Collection[int] | None, *, live_only: bool, now: datetime
) -> list[RetentionHold]:
    """Newest first; `institution_pks` None: every institution's."""
    query = select(RetentionHold).order_by(col(RetentionHold.pk).desc())
    if institution_pks is not None:
        query = query.where(col(RetentionHold.institution_pk).in_(list(institution_pks)))
    if live_only:
        query = query.where(live_hold_clause(now))  # type: ignore[arg-type]
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query))


def live_holds(
    engine: Engine, now: datetime, study_uids: Iterable[str], patients: Iterable[tuple[str, str]]
) -> list[RetentionHold]:
    """Live holds naming one of these studies or (patient ID, issuer) pairs."""
    uids, pairs = list(set(study_uids)), list(set(patients))
    naming: list[ColumnElement[bool]] = (
        [col(RetentionHold.study_instance_uid).in_(uids)] if uids else []
    )
    naming += [
        and_(
            col(RetentionHold.patient_id) == patient_id,
            col(RetentionHold.issuer_of_patient_id) == issuer,
        )
        for patient_id, issuer in pairs
        if patient_id
    ]
    if not naming:
        return []
    query = select(RetentionHold).where(live_hold_clause(now), or_(*naming))  # type: ignore[arg-type]
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query))


def holders_of(
    owner_pk: int | None, grants: Iterable[tuple[int, Any, Any, str]], now: datetime
) -> set[int]:
    """The institutions that hold a study (`Archive.read_study_access` rows): owner, live grants."""
    held = {pk for pk, expires, revoked, _ in grants if grant_is_live(expires, revoked, now)}
    return held | ({owner_pk} if owner_pk is not None else set())


def held_studies(
    engine: Engine, institution_pk: int, study_uids: Collection[str], now: datetime
) -> set[str]:
    """Which of these studies a live hold of the institution covers (by study or patient)."""
    if not study_uids:
        return set()
    query = (
        select(Study.study_instance_uid, Patient.patient_id, Patient.issuer_of_patient_id)
        .join(Patient, col(Patient.pk) == col(Study.patient_pk))
        .where(col(Study.study_instance_uid).in_(list(study_uids)))
    )
    with Session(engine) as session:
        rows = session.exec(query).all()
    holds = [
        h
        for h in live_holds(engine, now, study_uids, [(r[1], r[2]) for r in rows])
        if h.institution_pk == institution_pk
    ]
    return {
        uid
        for uid, patient_id, issuer in rows
        for h in holds
        if h.study_instance_uid == uid
        or (
            not h.study_instance_uid
            and (h.patient_id, h.issuer_of_patient_id) == (patient_id, issuer)
        )
    }


def frozen_studies(engine: Engine, study_uids: Collection[str], now: datetime) -> set[str]:
    """Which of these studies a live hold of any of their holders covers (the owner's, or that
    of an institution with a live grant): the sweeper's rule (`retention.rules.HoldFacts`), so
    nothing of such a study goes, the receivers' copies included."""
    if not study_uids:
        return set()
    query = (
        core_select(col(Study.pk), col(Study.study_instance_uid), col(Study.institution_pk),
                    col(Patient.patient_id), col(Patient.issuer_of_patient_id))
        .join(Patient, col(Patient.pk) == col(Study.patient_pk))
        .where(col(Study.study_instance_uid).in_(list(study_uids)))
    )  # fmt: skip
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        grants = connection.execute(
            core_select(col(StudyGrant.study_pk), col(StudyGrant.institution_pk),
                        col(StudyGrant.expires_at), col(StudyGrant.revoked_at))
            .where(col(StudyGrant.study_pk).in_([row[0] for row in rows]))
        ).all()  # fmt: skip
    holders: dict[int | None, set[int]] = {
        pk: {owner} if owner else set() for pk, _, owner, *_ in rows
    }
    for study_pk, institution_pk, expires, revoked in grants:
        if grant_is_live(expires, revoked, now):
            holders[study_pk].add(institution_pk)
    holds = live_holds(engine, now, study_uids, [(r[3], r[4]) for r in rows])
    return {
        uid
        for pk, uid, _, patient_id, issuer in rows
        for h in holds
        if h.institution_pk in holders[pk]
        and (
            h.study_instance_uid == uid
            or (
                not h.study_instance_uid
                and (h.patient_id, h.issuer_of_patient_id) == (patient_id, issuer)
            )
        )
    }
