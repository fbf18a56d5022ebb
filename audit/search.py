"""Searching the audit trail (patient, study, accession, transaction, actor, time); daily counts.

Pages run newest first by keyset on pk (`before_pk`), so paging through millions of events
costs the same on the last page as on the first, and new events never shift a page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, String, func, or_, select

from audit.models import AuditEvent, AuditEventInstitution
from audit.trail import format_time
from foundation.database import table_of
from foundation.errors import InvalidQuery

MAX_LIMIT = 1000
_TABLE = table_of(AuditEvent)
_LINKS = table_of(AuditEventInstitution)
_EXACT = (
    "patient_id",
    "study_uid",
    "accession_number",
    "transaction",
    "actor",
    "action",
    "outcome",
)


@dataclass(frozen=True)
class AuditQuery:
    """Every given criterion must hold (AND); strings match exactly. Times: since <= at < until."""

    patient_id: str | None = None
    study_uid: str | None = None
    accession_number: str | None = None
    transaction: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    # An institution's events: its own, and those that concern it (its people's sign-ins).
    institution_pks: tuple[int, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    # What the asker may see, as a condition on audit_event's columns: the caller (who knows
    # whose studies, transfers and people these are) builds it; the search only applies it.
    within: ColumnElement[bool] | None = None


@dataclass(frozen=True)
class AuditEntry:
    pk: int
    at: datetime
    actor: str
    actor_kind: str
    institution_pk: int | None
    action: str
    outcome: str
    rule: str
    reason: str
    study_uid: str
    patient_id: str
    accession_number: str
    transaction: str
    client_address: str
    detail: str
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: UTC time, parsed detail, and the hashes, so exports can be rechecked."""
        values = asdict(self)
        values["at"] = format_time(self.at)
        values["detail"] = json.loads(self.detail or "{}")
        return values


@dataclass(frozen=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next_before_pk: int | None  # pass as `before_pk` for the next (older) page; None: no more


@dataclass(frozen=True)
class DailyCount:
    day: date  # UTC
    action: str
    outcome: str
    count: int


def search_events(
    engine: Engine, query: AuditQuery, limit: int = 100, before_pk: int | None = None
) -> AuditPage:
    """One page of matching events, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    statement = select(_TABLE).where(*_criteria(query))
    if before_pk is not None:
        statement = statement.where(_TABLE.c.pk < before_pk)
    statement = statement.order_by(_TABLE.c.pk.desc()).limit(limit + 1)
    with engine.connect() as connection:
        rows = connection.execute(statement).mappings().all()
    entries = tuple(AuditEntry(**row) for row in rows[:limit])
    more = len(rows) > limit
    return AuditPage(entries, entries[-1].pk if more else None)


def iter_events(engine: Engine, query: AuditQuery, batch: int = 500) -> Iterator[AuditEntry]:
    """All matching events, oldest first (chain order), read in keyset batches."""
    criteria, after = _criteria(query), 0
    while True:
        entries = _read_after(engine, criteria, after, batch)
        yield from entries
        if len(entries) < batch:
            return
        after = entries[-1].pk


def read_events_after(engine: Engine, after_pk: int, limit: int) -> list[AuditEntry]:
    """Up to `limit` events that follow `after_pk` in the chain, oldest first."""
    return _read_after(engine, [], after_pk, limit)


def _read_after(
    engine: Engine, criteria: list[ColumnElement[bool]], after: int, limit: int
) -> list[AuditEntry]:
    statement = (
        select(_TABLE).where(*criteria, _TABLE.c.pk > after).order_by(_TABLE.c.pk).limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).mappings().all()
    return [AuditEntry(**row) for row in rows]


def count_events_by_day(engine: Engine, query: AuditQuery) -> list[DailyCount]:
    """Events per UTC day, action and outcome: the auditor's and administrator's statistics."""
    day = _utc_day(engine)
    statement = (
        select(day, _TABLE.c.action, _TABLE.c.outcome, func.count())
        .where(*_criteria(query))
        .group_by(day, _TABLE.c.action, _TABLE.c.outcome)
        .order_by(day, _TABLE.c.action, _TABLE.c.outcome)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [DailyCount(date.fromisoformat(str(r[0])), r[1], r[2], int(r[3])) for r in rows]


def _criteria(query: AuditQuery) -> list[ColumnElement[bool]]:
    columns = _TABLE.c
    criteria: list[ColumnElement[bool]] = []
    for name in _EXACT:
        value = getattr(query, name)
        if value is not None:
            criteria.append(columns[name] == value)
    if query.institution_pks is not None:
        concerned = select(_LINKS.c.event_pk).where(
            _LINKS.c.institution_pk.in_(query.institution_pks)
        )
        criteria.append(
            or_(columns.institution_pk.in_(query.institution_pks), columns.pk.in_(concerned))
        )
    if query.within is not None:
        criteria.append(query.within)
    for moment in (query.since, query.until):
        if moment is not None and moment.utcoffset() is None:
            raise InvalidQuery("audit search times must carry a timezone")
    if query.since is not None:
        criteria.append(columns.at >= query.since)
    if query.until is not None:
        criteria.append(columns.at < query.until)
    return criteria


def _utc_day(engine: Engine) -> ColumnElement[str]:
    at = _TABLE.c.at
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", at), "YYYY-MM-DD", type_=String).label("day")
    return func.substr(at, 1, 10, type_=String).label("day")  # SQLite stores UTC text
