"""The revocation epoch: a counter the database bumps whenever who someone is may have changed.

Authentication keeps the principals it built, per process, tagged with the epoch read *before*
building them; a cached principal serves a request only while the epoch is unchanged. Triggers
(migration `perf_http_0001_auth_epoch`) bump it on every change that can narrow a credential:
a user's status, token version, e-mail or administration right; any membership; an API
client; an API token's revocation, expiry, scopes or secret; a sign-in session's revocation or
expiry; and deletes of any of these. Triggers, not calls in our code, so no path that writes
those rows (the portal, the command line, a migration, an operator's SQL) can forget it.

A request therefore pays one read of a one-row table instead of the user, session and
membership rows, and a revocation still stops every copy of a credential on its next request,
in every process.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel

from foundation.driver_sql import dbapi_cursor

EPOCH_PK = 1
_READ = "SELECT value FROM auth_epoch WHERE pk = 1"


class AuthEpoch(SQLModel, table=True):
    """One row; only the triggers write it."""

    __tablename__ = "auth_epoch"

    pk: int = Field(default=EPOCH_PK, primary_key=True)
    value: int = Field(default=0)


def read_auth_epoch(engine: Engine) -> int | None:
    """The current epoch; None where there is none (a schema made without the migrations).

    Read on a pooled DB-API connection directly: every authenticated request pays this read,
    and SQLAlchemy's `Connection` and result around it cost four times the query on SQLite.
    """
    try:
        with dbapi_cursor(engine) as cursor:  # back to the pool, its transaction ended
            cursor.execute(_READ)
            row = cursor.fetchone()
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error):
        return None
    return None if row is None or row[0] is None else int(row[0])
