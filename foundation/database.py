"""Database engine and schema migrations (SQLite in WAL mode, or PostgreSQL).

The foundation knows no table: the composition root hands `migrate` the metadata of every
package's models, and the migration scripts here speak only Alembic and SQLAlchemy.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; NORMAL is durable at each WAL checkpoint."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def create_database_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def alembic_config(engine: Engine, metadata: MetaData | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    config.attributes["target_metadata"] = metadata
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revisions of the migration scripts (read once a process: Alembic parses every
    script to find them)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def migrate(engine: Engine, metadata: MetaData | None = None) -> None:
    """Bring the schema to the newest revision; safe to run at every start.

    A database already at the newest revision costs one read of `alembic_version`: every
    `ferry` command and process start migrates, and most find nothing to do."""
    with engine.begin() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        if current and frozenset(current) == head_revisions():
            return
        config = alembic_config(engine, metadata)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def check_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def check_database_writable(engine: Engine) -> None:
    """Readiness: a committed write (a no-op update of alembic's own row), not only a read."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = version_num"))


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class, for statements built with SQLAlchemy Core."""
    table = inspect(model).local_table
    assert isinstance(table, Table), f"{model.__name__} is not a table class"
    return table
