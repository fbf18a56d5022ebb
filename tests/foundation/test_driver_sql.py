"""Statements run on the DB-API cursor store and find what SQLAlchemy's `execute` would,
through a `DriverCursor` in a connection's transaction or a pooled connection of their own."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, bindparam, insert, select, text

from archive import index
from archive.store import Archive
from audit.models import AuditEvent
from audit.trail import AuditRecord, record
from foundation.driver_sql import DriverCursor, dbapi_cursor, fetch_all, prepare
from policy.models import Institution
from tests import factories


def _instance_row(uid: str, series_pk: int) -> dict[str, object]:
    return {
        "series_pk": series_pk,
        "sop_instance_uid": uid,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "blob_key": f"k/{uid}.dcm",
        "size": 3,
        "metadata_json": b"{\x00}",  # bytes kept as bytes, a NUL and all
    }


def _stored_text(engine: Engine, uid: str) -> tuple[object, ...]:
    """The row as the database holds it, read without SQLAlchemy's result types; of the time,
    its shape (SQLite keeps it as text: the format must be SQLAlchemy's)."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT CAST(created_at AS TEXT), metadata_json, size FROM instance "
                "WHERE sop_instance_uid = :uid"
            ),
            {"uid": uid},
        ).one()
    shape = re.sub(r"[0-9]", "9", str(row[0]))
    return (shape if engine.dialect.name == "sqlite" else shape[:19], bytes(row[1]), row[2])


def test_rows_are_written_as_sqlalchemy_writes_them(archive: Archive, tmp_path: Path) -> None:
    assert [o.stored for o in archive.store_files(factories.write_series(tmp_path, 1))] == [True]
    with archive.engine.connect() as connection:
        series_pk = connection.execute(select(index.SERIES.c.pk)).scalar_one()
    before = datetime.now(UTC)
    with archive.engine.begin() as connection:
        connection.execute(insert(index.INSTANCE), [_instance_row("1.2.3.1", series_pk)])
        returned = DriverCursor(connection).execute_many(
            index._instance_insert(connection.dialect.name),
            [_instance_row("1.2.3.2", series_pk), _instance_row("1.2.3.1", series_pk)],
        )
    assert returned == [("1.2.3.2",)]  # the one already there lost, as ON CONFLICT says

    assert _stored_text(archive.engine, "1.2.3.2") == _stored_text(archive.engine, "1.2.3.1")
    with archive.engine.connect() as connection:
        created = connection.execute(
            select(index.INSTANCE.c.created_at).where(
                index.INSTANCE.c.sop_instance_uid == "1.2.3.2"
            )
        ).scalar_one()
    assert created.tzinfo is not None and before <= created <= datetime.now(UTC)


def test_lists_fill_an_in_and_rows_come_back_as_tuples(archive: Archive, tmp_path: Path) -> None:
    stored = archive.store_files(factories.write_series(tmp_path, 3))
    uids = [o.sop_instance_uid for o in stored]
    statement = select(index.INSTANCE.c.sop_instance_uid, index.INSTANCE.c.size).where(
        index.INSTANCE.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
    )
    with archive.engine.connect() as connection:
        driver = DriverCursor(connection)
        two = driver.execute(statement, {"uids": [*uids[:2], "1.2.9"]})
        one = driver.execute(statement, {"uids": uids[2:]})
    assert sorted(uid for uid, _ in two) == sorted(uids[:2])
    assert [uid for uid, _ in one] == uids[2:]
    assert all(isinstance(size, int) and size > 0 for _, size in two + one)


_PKS = bindparam("pks", expanding=True)


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
