"""The receiver's worklist: incoming transfers and their studies, filtered, sorted and paged.

An institution's worklist holds the transfers sent to it and, for people who are members of
them, to its security institutions. Filters on the studies (patient, accession, modality, study
date) are EXISTS conditions in the query itself, so counts and pages see only what matches.
Urgent comes before routine, then newest arrival first, unless another order is asked for.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Engine, and_, case, exists, func, or_
from sqlmodel import Session, col, select

from archive.models import Patient, Series, Study
from exchange.models import Priority, Transfer, TransferStatus, TransferStudy

NOT_ON_WORKLISTS = (
    TransferStatus.DRAFT.value,
    TransferStatus.COLLECTING.value,
    TransferStatus.CANCELLED.value,
    TransferStatus.REFUSED.value,
)
SORTS = {
    "arrival": col(Transfer.sent_at),
    "priority": col(Transfer.priority),
    "status": col(Transfer.status),
    "created": col(Transfer.created_at),
}


@dataclass(frozen=True)
class WorklistQuery:
    statuses: tuple[str, ...] = ()
    sender_pks: tuple[int, ...] = ()
    priority: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None  # a prefix, case-insensitive
    accession_number: str | None = None
    modality: str | None = None
    study_date_from: str | None = None  # YYYYMMDD
    study_date_to: str | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None
    include_done: bool = True
    sort: str = "arrival"
    descending: bool = True
    offset: int = 0
    limit: int = 50


def _study_of_transfer() -> object:
    """Study rows that belong to the outer transfer: listed, or a pushed transfer's own."""
    listed = (
        select(TransferStudy.study_instance_uid)
        .where(TransferStudy.transfer_pk == Transfer.pk)
        .correlate(Transfer)
    )
    return or_(
        col(Study.study_instance_uid).in_(listed),
        col(Study.study_instance_uid) == col(Transfer.study_instance_uid),
    )


def _study_conditions(query: WorklistQuery) -> list[object]:
    conditions: list[object] = []
    if query.patient_id:
        conditions.append(col(Patient.patient_id) == query.patient_id)
    if query.patient_name:
        conditions.append(col(Study.patient_name_search).startswith(query.patient_name.upper()))
    if query.accession_number:
        conditions.append(col(Study.accession_number) == query.accession_number)
    if query.study_date_from:
        conditions.append(col(Study.study_date) >= query.study_date_from)
    if query.study_date_to:
        conditions.append(col(Study.study_date) <= query.study_date_to)
    if query.modality:
        conditions.append(
            exists(
                select(Series.pk).where(
                    Series.study_pk == Study.pk, col(Series.modality) == query.modality.upper()
                )
            )
        )
    return conditions


def _conditions(institution_pks: Collection[int], query: WorklistQuery) -> list[object]:
    conditions: list[object] = [col(Transfer.destination_institution_pk).in_(list(institution_pks))]
    if query.statuses:
        conditions.append(col(Transfer.status).in_(list(query.statuses)))
    else:
        conditions.append(col(Transfer.status).not_in(NOT_ON_WORKLISTS))
    if query.sender_pks:
        conditions.append(col(Transfer.sender_institution_pk).in_(list(query.sender_pks)))
    if query.priority:
        conditions.append(col(Transfer.priority) == Priority(query.priority).value)
    if query.arrived_from:
        conditions.append(col(Transfer.sent_at) >= query.arrived_from)
    if query.arrived_to:
        conditions.append(col(Transfer.sent_at) <= query.arrived_to)
    if not query.include_done:
        conditions.append(col(Transfer.done_at).is_(None))
    on_studies = _study_conditions(query)
    if on_studies:
        matching = (
            select(Study.pk)
            .join(Patient, col(Patient.pk) == col(Study.patient_pk))
            .where(_study_of_transfer(), *on_studies)  # type: ignore[arg-type]
            .correlate(Transfer)
        )
        conditions.append(exists(matching))
    return conditions


def search_worklist(
    engine: Engine, institution_pks: Collection[int], query: WorklistQuery
) -> tuple[int, list[Transfer]]:
    """The total matching, and one page of transfers."""
    conditions = _conditions(institution_pks, query)
    urgent_first = case((col(Transfer.priority) == Priority.URGENT.value, 0), else_=1)
    key = SORTS.get(query.sort, SORTS["arrival"])
    order = key.desc() if query.descending else key.asc()
    page = (
        select(Transfer)
        .where(and_(*conditions))  # type: ignore[arg-type]
        .order_by(urgent_first, order, col(Transfer.pk).desc())
        .offset(max(query.offset, 0))
        .limit(max(1, min(query.limit, 500)))
    )
    total = select(func.count()).select_from(Transfer).where(and_(*conditions))  # type: ignore[arg-type]
    with Session(engine, expire_on_commit=False) as session:
        count = session.exec(total).one()
        rows = list(session.exec(page))
    return int(count), rows


@dataclass(frozen=True)
class StudySummary:
    """What a worklist row shows of a study: the patient banner's facts first."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_description: str = ""
    modalities: tuple[str, ...] = ()
    in_archive: bool = False


def _person_name(attrs: bytes) -> str:
    value = orjson.loads(attrs).get("00100010", {}).get("Value") or [{}]
    first = value[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


def describe_studies(session: Session, uids: Collection[str]) -> list[StudySummary]:
    """In the order given; a study deleted since keeps only its UID."""
    wanted = list(uids)
    rows = session.exec(
        select(Study, Patient.patient_id)
        .join(Patient, col(Patient.pk) == col(Study.patient_pk))
        .where(col(Study.study_instance_uid).in_(wanted))
    ).all()
    modalities: dict[int, set[str]] = {}
    for study_pk, modality in session.exec(
        select(Series.study_pk, Series.modality).where(
            col(Series.study_pk).in_([study.pk for study, _ in rows])
        )
    ):
        modalities.setdefault(study_pk, set()).add(modality)
    found = {
        study.study_instance_uid: StudySummary(
            study.study_instance_uid,
            patient_id,
            _person_name(study.attrs_json),
            study.patient_birth_date,
            study.patient_sex,
            study.accession_number,
            study.study_date,
            study.study_description,
            tuple(sorted(m for m in modalities.get(study.pk or 0, ()) if m)),
            True,
        )
        for study, patient_id in rows
    }
    return [found.get(uid, StudySummary(uid)) for uid in wanted]
