"""One sweep at a time across every process and host: a database lock, released on death.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`, numbered from the schema Ferry's
tables are in) on a connection held for the sweep; the server releases it when the connection
ends, however the process died. SQLite (one host by nature): a lease in the one-row
`retention_sweep_lock` table, taken by a conditional UPDATE (SQLite serialises writers) and
renewed each batch; a lease whose holder is a process
of this host that no longer exists, or whose time has passed, may be taken over.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, or_, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from exchange.retention_models import RetentionSweepLock

# One advisory lock per Ferry: its number is made from the schema Ferry's tables are in, so that
# Ferrys sharing a PostgreSQL server in schemas of their own each sweep (advisory locks are
# server-wide), while every process and host of one Ferry meet on the same number.
ADVISORY_KEY = "hashtextextended('ferry-retention-sweep:' || current_schema(), 0)"
LEASE = timedelta(minutes=10)
_LOCK = RetentionSweepLock.__table__  # type: ignore[attr-defined]


class SweepLock:
    """Held by the current sweep; `renew()` between batches keeps a SQLite lease alive."""

    def __init__(self, engine: Engine, holder: str) -> None:
        self.engine = engine
        self.holder = holder

    def renew(self) -> None:
        if self.engine.dialect.name == "postgresql":
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(_LOCK)
                .where(_LOCK.c.pk == 1, _LOCK.c.holder == self.holder)
                .values(locked_until=_now() + LEASE)
            )


def _now() -> datetime:
    return datetime.now(UTC)  # a lease is about real time, whatever clock decides retention


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@contextmanager
def sweep_lock(engine: Engine) -> Iterator[SweepLock | None]:
    """Yields the lock, or None when another sweep holds it (the caller then does nothing)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            yield from _advisory(engine, connection)
        return
    holder = _me()
    if not _take_lease(engine, holder):
        yield None
        return
    try:
        yield SweepLock(engine, holder)
    finally:
        with engine.begin() as connection:
            connection.execute(
                update(_LOCK)
                .where(_LOCK.c.pk == 1, _LOCK.c.holder == holder)
                .values(holder="", locked_until=None)
            )


def _advisory(engine: Engine, connection: Connection) -> Iterator[SweepLock | None]:
    got = connection.execute(text(f"SELECT pg_try_advisory_lock({ADVISORY_KEY})")).scalar()
    connection.commit()  # the lock belongs to the session, not to this transaction
    if not got:
        yield None
        return
    try:
        yield SweepLock(engine, "advisory")
    finally:
        connection.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_KEY})"))
        connection.commit()


def _take_lease(engine: Engine, holder: str) -> bool:
    now = _now()
    with engine.begin() as connection:
        connection.execute(sqlite_insert(_LOCK).values(pk=1, holder="").on_conflict_do_nothing())
        current = connection.execute(_LOCK.select().where(_LOCK.c.pk == 1)).one()
        stale = [""]
        if current.holder and _dead_here(current.holder):
            stale.append(current.holder)
        taken = connection.execute(
            update(_LOCK)
            .where(
                _LOCK.c.pk == 1,
                or_(_LOCK.c.holder.in_(stale), _LOCK.c.locked_until < now),
            )
            .values(holder=holder, locked_until=now + LEASE)
        )
        return bool(taken.rowcount)


def _dead_here(holder: str) -> bool:
    """A holder on this host whose process is gone (killed mid-sweep)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdecimal():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
