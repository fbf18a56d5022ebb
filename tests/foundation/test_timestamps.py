"""One timestamp column type: UTC stored, aware read back, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from ferry.database import metadata
from foundation.database import create_database_engine
from foundation.timestamps import UTCTimestamp, columns_not_utc


def test_every_stored_time_is_a_utc_timestamp() -> None:
    assert columns_not_utc(metadata()) == []
    other = MetaData()
    Table("naive", other, Column("at", DateTime()), Column("ok", UTCTimestamp()))
    assert columns_not_utc(other) == ["naive.at"]


def test_a_time_comes_back_aware_and_in_utc(database_url: str) -> None:
    engine = create_database_engine(database_url)
    table = Table("moments", MetaData(), Column("pk", Integer, primary_key=True))
    table.append_column(Column("at", UTCTimestamp(), nullable=True))
    table.create(engine)
    evening_in_sydney = datetime(2026, 12, 6, 20, 30, tzinfo=timezone(timedelta(hours=11)))
    with engine.begin() as connection:
        rows_in = [{"pk": 1, "at": evening_in_sydney}, {"pk": 2, "at": None}]
        connection.execute(insert(table), rows_in)
        rows = {pk: at for pk, at in connection.execute(select(table.c.pk, table.c.at))}
        later = connection.execute(
            select(table.c.pk).where(table.c.at > datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
        ).scalars()
        assert list(later) == [1]  # 09:30 UTC is after 09:00 UTC
    assert rows[1] == evening_in_sydney and rows[1].tzinfo == UTC
    assert rows[1].hour == 9 and rows[2] is None
    with pytest.raises(StatementError, match="timezone"), engine.begin() as connection:
        connection.execute(insert(table), [{"pk": 3, "at": datetime(2026, 12, 6, 9, 30)}])
    engine.dispose()
