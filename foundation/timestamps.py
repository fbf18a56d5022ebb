"""One timestamp column type: aware UTC in Python, plain UTC in the database.

SQLite keeps no time zone, and the schema's columns are `TIMESTAMP WITHOUT TIME ZONE` on
PostgreSQL too, so values come back naive. Every model's datetime column uses `UTCDateTime`,
which stores UTC and hands back aware UTC datetimes; no caller needs to repair a naive one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"a timestamp must be a datetime, not {type(value).__name__}")
        return as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc(moment: datetime) -> datetime:
    """A datetime from outside the database (a test, a clock) as aware UTC; naive means UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
