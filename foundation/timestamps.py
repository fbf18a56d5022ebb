"""The one column type for moments in time: stored as UTC, always read back timezone-aware.

SQLModel gives every `datetime` field its `UTCDateTime` (a TypeDecorator over
`DateTime(timezone=True)`): it refuses naive values, converts aware ones to UTC, and hands back
aware UTC datetimes on SQLite (which keeps no zone) and PostgreSQL (`timestamptz`) alike. That
is the one timestamp type; this module names it, for columns declared outside a `datetime`
field and for the check that no table holds a timestamp of another kind. Code that reads a
stored time therefore never patches in a zone.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.types import DateTime
from sqlmodel.sql.sqltypes import UTCDateTime as UTCTimestamp

__all__ = ["UTCTimestamp", "columns_not_utc"]


def columns_not_utc(metadata: MetaData) -> list[str]:
    """`table.column` of every date-and-time column that is not a UTCTimestamp."""
    return [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if column.type._type_affinity is DateTime and not isinstance(column.type, UTCTimestamp)
    ]
