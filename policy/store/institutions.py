"""Institutions and security institutions, with their core hours and public holidays."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import Engine
from sqlmodel import col, select

from policy.hours import parse_clock
from policy.models import CoreHours, Holiday, Institution
from policy.store._base import (
    DuplicateRecord,
    InvalidRecord,
    UnknownRecord,
    check_code,
    check_text,
    check_timezone,
    reading,
    writing,
)


def create_institution(
    engine: Engine,
    code: str,
    name: str,
    *,
    timezone: str = "UTC",
    contact: str = "",
    parent_pk: int | None = None,
    worklist_restricted: bool = True,
) -> Institution:
    """A security institution (with `parent_pk`) takes its parent's timezone unless given one."""
    code = check_code(code.strip())
    institution = Institution(
        code=code,
        name=check_text(name, "name", 256, required=True),
        timezone=check_timezone(timezone),
        contact=check_text(contact, "contact", 256),
        worklist_restricted=worklist_restricted,
    )
    with writing(engine, f"an institution with code {code!r} exists") as session:
        if parent_pk is not None:
            parent = session.get(Institution, parent_pk)
            if parent is None:
                raise UnknownRecord(f"no institution {parent_pk}")
            if parent.parent_pk is not None:
                raise InvalidRecord("a security institution cannot have security institutions")
            institution.parent_pk = parent.pk
        if session.exec(select(Institution).where(Institution.code == code)).first():
            raise DuplicateRecord(f"an institution with code {code!r} exists")
        session.add(institution)
    return institution


def get_institution(engine: Engine, pk: int) -> Institution:
    with reading(engine) as session:
        institution = session.get(Institution, pk)
    if institution is None:
        raise UnknownRecord(f"no institution {pk}")
    return institution


def find_institution(engine: Engine, code: str) -> Institution:
    with reading(engine) as session:
        institution = session.exec(select(Institution).where(Institution.code == code)).first()
    if institution is None:
        raise UnknownRecord(f"no institution {code!r}")
    return institution


def list_institutions(engine: Engine, pks: Collection[int] | None = None) -> list[Institution]:
    """All institutions, or only those named by `pks` (what an administrator may see)."""
    query = select(Institution).order_by(col(Institution.code))
    if pks is not None:
        query = query.where(col(Institution.pk).in_(list(pks)))
    with reading(engine) as session:
        return list(session.exec(query))


def security_institutions(engine: Engine, parent_pk: int) -> list[Institution]:
    query = select(Institution).where(Institution.parent_pk == parent_pk)
    with reading(engine) as session:
        return list(session.exec(query.order_by(col(Institution.code))))


def update_institution(
    engine: Engine,
    pk: int,
    *,
    name: str | None = None,
    timezone: str | None = None,
    contact: str | None = None,
    worklist_restricted: bool | None = None,
) -> Institution:
    with writing(engine, "the institution changed meanwhile") as session:
        institution = session.get(Institution, pk)
        if institution is None:
            raise UnknownRecord(f"no institution {pk}")
        if name is not None:
            institution.name = check_text(name, "name", 256, required=True)
        if timezone is not None:
            institution.timezone = check_timezone(timezone)
        if contact is not None:
            institution.contact = check_text(contact, "contact", 256)
        if worklist_restricted is not None:
            institution.worklist_restricted = worklist_restricted
        session.add(institution)
    return institution


def _check_weekdays(weekdays: Collection[int]) -> str:
    days = sorted(set(weekdays))
    if any(day not in range(1, 8) for day in days):
        raise InvalidRecord("weekdays are ISO numbers: 1 (Monday) to 7 (Sunday)")
    return ",".join(str(day) for day in days)


def _check_clock(text: str, field: str) -> str:
    try:
        clock = parse_clock(text)
    except ValueError:
        raise InvalidRecord(f"{field} must be a time of day as HH:MM, got {text!r}") from None
    if len(text.strip()) > 5:
        raise InvalidRecord(f"{field} must be a time of day as HH:MM, got {text!r}")
    return clock.strftime("%H:%M")


def core_hours(engine: Engine, institution_pk: int) -> CoreHours:
    """The institution's core hours; Monday to Friday 08:00-18:00 until an administrator says."""
    query = select(CoreHours).where(CoreHours.institution_pk == institution_pk)
    with reading(engine) as session:
        hours = session.exec(query).first()
    return hours or CoreHours(institution_pk=institution_pk)


def set_core_hours(
    engine: Engine, institution_pk: int, weekdays: Collection[int], start: str, end: str
) -> CoreHours:
    """An end before the start is a night window running past midnight."""
    values = {
        "weekdays": _check_weekdays(weekdays),
        "start": _check_clock(start, "start"),
        "end": _check_clock(end, "end"),
    }
    if values["start"] == values["end"]:
        raise InvalidRecord("core hours need a start different from their end")
    query = select(CoreHours).where(CoreHours.institution_pk == institution_pk)
    with writing(engine, "the core hours changed meanwhile") as session:
        hours = session.exec(query).first() or CoreHours(institution_pk=institution_pk)
        for field, value in values.items():
            setattr(hours, field, value)
        session.add(hours)
    return hours


def list_holidays(engine: Engine, institution_pk: int) -> list[Holiday]:
    query = select(Holiday).where(Holiday.institution_pk == institution_pk)
    with reading(engine) as session:
        return list(session.exec(query.order_by(col(Holiday.day))))


def add_holiday(engine: Engine, institution_pk: int, day: date, name: str = "") -> Holiday:
    holiday = Holiday(institution_pk=institution_pk, day=day, name=check_text(name, "name", 128))
    with writing(engine, f"{day.isoformat()} is already a holiday") as session:
        exists = select(Holiday).where(Holiday.institution_pk == institution_pk, Holiday.day == day)
        if session.exec(exists).first():
            raise DuplicateRecord(f"{day.isoformat()} is already a holiday")
        session.add(holiday)
    return holiday


def remove_holiday(engine: Engine, institution_pk: int, day: date) -> None:
    query = select(Holiday).where(Holiday.institution_pk == institution_pk, Holiday.day == day)
    with writing(engine, "the holidays changed meanwhile") as session:
        holiday = session.exec(query).first()
        if holiday is None:
            raise UnknownRecord(f"{day.isoformat()} is not a holiday")
        session.delete(holiday)
