"""Statements compiled once and run on a pooled DB-API connection give what SQLAlchemy gives."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, bindparam, select

from audit.models import AuditEvent
from audit.trail import AuditRecord, record
from ferry.database import create_database_engine, migrate
from ferry.settings import Settings
from foundation.prepared import dbapi_cursor, fetch_all, prepare
from policy.models import Institution

_PKS = bindparam("pks", expanding=True)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    built = create_database_engine(settings)
    migrate(built)
    yield built
    built.dispose()


def _through_sqlalchemy(engine: Engine, statement, values) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(statement, values)]


def test_expanding_lists_of_any_length_match_sqlalchemy(engine: Engine) -> None:
    with engine.begin() as connection:
        for code in ("A", "B", "C"):
            connection.execute(Institution.__table__.insert().values(code=code, name=code))
    statement = (
        select(Institution.pk, Institution.code)
        .where(Institution.code.in_(_PKS), Institution.name != bindparam("not_named"))
        .order_by(Institution.pk)
    )
    prepared = prepare(statement, engine.dialect)
    for codes in ([], ["A"], ["A", "C"], ["C", "B", "A", "Z"]):
        values = {"pks": codes, "not_named": "B"}
        with dbapi_cursor(engine) as cursor:
            found = fetch_all(cursor, prepared, values)
        assert found == _through_sqlalchemy(engine, statement, values)
    with dbapi_cursor(engine) as cursor:
        assert fetch_all(cursor, prepared, {"pks": [], "not_named": ""}) == []


def test_values_go_through_the_column_types_bind_processors(engine: Engine) -> None:
    """Times compared with stored times match as SQLAlchemy's own bound values would."""
    start = datetime(2026, 12, 7, 3, 0, 0, 500, tzinfo=UTC)
    for minutes in range(4):
        record(
            engine,
            AuditRecord(action="search", outcome="allowed", at=start + timedelta(minutes=minutes)),
        )
    statement = (
        select(AuditEvent.pk)
        .where(AuditEvent.at > bindparam("now"), AuditEvent.action.in_(_PKS))
        .order_by(AuditEvent.pk)
    )
    prepared = prepare(statement, engine.dialect)
    for minutes in (-1, 0, 1.5, 3, 9):
        values = {"now": start + timedelta(minutes=minutes), "pks": ["search", "store"]}
        with dbapi_cursor(engine) as cursor:
            found = fetch_all(cursor, prepared, values)
        assert found == _through_sqlalchemy(engine, statement, values)
        assert len(found) == len([m for m in range(4) if m > minutes])
