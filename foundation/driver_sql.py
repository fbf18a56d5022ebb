"""Hot statements run on the DB-API cursor: compiled once per dialect, no per-execute layers.

SQLAlchemy's `Connection.execute` spends, per statement, a cache key over the statement's tree,
an execution context, parameter processing and a result object: several times what SQLite
takes to run a small indexed statement. The few statements on a per-request or per-instance
path (a search of a known shape and its counts, the audit append, a C-STORE's index rows) are
compiled here by SQLAlchemy's own compiler into their SQL text, their parameters' order, their
bind processors (a `DateTime` stored as SQLite text, for instance) and their client-side insert
defaults, once, then run on a DB-API cursor with the values they need:

- `DriverCursor(connection)` runs them on the DB-API connection under a SQLAlchemy
  `Connection`, inside whatever transaction that connection is in: the caller keeps its
  `engine.begin()` / `engine.connect()` and may mix these with ordinary `execute` calls;
- `dbapi_cursor(engine)` with `fetch_all` / `execute_many` runs them on a pooled DB-API
  connection of its own, with a `Prepared` from `prepared` (or `prepare`, cached by the caller).

Expanding parameters (`bindparam(..., expanding=True)`, an `IN` list) are spliced in as one
placeholder per value; an empty list matches nothing. Rows come back as the driver gives them,
plain tuples: use this for columns whose driver values are what the caller reads (integers,
text, bytes), not for types SQLAlchemy converts on the way out. Engine events
(`before_cursor_execute`) do not see these statements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_MARKER = "__[POSTCOMPILE_{}]"


@dataclass(frozen=True, eq=False)  # hashed by identity: one per statement and dialect
class Prepared:
    """One statement compiled for one dialect."""

    sql: str
    positional: bool  # qmark (SQLite): values in `order`; otherwise named (`%(name)s`)
    order: tuple[str, ...]
    defaults: Mapping[str, Any]  # values the statement carries itself (literals made binds)
    insert_defaults: tuple[tuple[str, Callable[[Any], Any]], ...]  # a column's Python default
    processors: Mapping[str, Callable[[Any], Any]]
    expanding: frozenset[str]

    def parameters(self, values: Mapping[str, Any]) -> tuple[str, Sequence[Any] | dict[str, Any]]:
        """The SQL text (expanding lists spliced in) and the DB-API parameters for `values`."""
        merged = {**self.defaults, **values}
        for name, default in self.insert_defaults:
            merged[name] = default(None)
        sql = self._expanded_sql(tuple(len(merged[name]) for name in sorted(self.expanding)))
        if self.positional:
            flat: list[Any] = []
            for name in self.order:
                if name in self.expanding:
                    flat.extend(self._process(name, item) for item in merged[name])
                else:
                    flat.append(self._process(name, merged[name]))
            return sql, flat
        named: dict[str, Any] = {}
        for name, value in merged.items():
            if name in self.expanding:
                for position, item in enumerate(value):
                    named[f"{name}__{position}"] = self._process(name, item)
            else:
                named[name] = self._process(name, value)
        return sql, named

    def _process(self, name: str, value: Any) -> Any:
        processor = self.processors.get(name)
        return value if processor is None or value is None else processor(value)

    def _expanded_sql(self, lengths: tuple[int, ...]) -> str:
        return _splice(self, lengths) if self.expanding else self.sql


@functools.lru_cache(maxsize=512)
def _splice(prepared: Prepared, lengths: tuple[int, ...]) -> str:
    sql = prepared.sql
    for name, length in zip(sorted(prepared.expanding), lengths, strict=True):
        if length == 0:
            placeholders = "NULL"  # `x IN (NULL)` is never true
        elif prepared.positional:
            placeholders = ", ".join("?" * length)
        else:
            placeholders = ", ".join(f"%({name}__{i})s" for i in range(length))
        sql = sql.replace(_MARKER.format(name), placeholders)
    return sql


def prepare(
    statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
) -> Prepared:
    """Compile `statement` for `dialect` (cache the result: compiling is the costly part).

    `column_keys`: for an INSERT without `values()`, the columns each row gives; the others
    get their client-side default, as `execute` would give them.
    """
    compiled = statement.compile(
        dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
    )
    assert isinstance(compiled, SQLCompiler)
    binds = compiled.binds
    expanding = frozenset(name for name, bind in binds.items() if bind.expanding)
    processors = {}
    for name, bind in binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    defaults = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    insert_defaults = []
    for column in getattr(compiled, "insert_prefetch", ()):
        default = column.default
        make = default.arg if default.is_callable else functools.partial(_constant, default.arg)
        insert_defaults.append((column.key, make))
    return Prepared(
        sql=compiled.string,
        positional=bool(dialect.positional),
        order=tuple(compiled.positiontup or ()),
        defaults=defaults,
        insert_defaults=tuple(insert_defaults),
        processors=processors,
        expanding=expanding,
    )


def _constant(value: Any, _context: Any) -> Any:
    return value


@functools.lru_cache(maxsize=512)
def prepared(
    statement: ClauseElement, dialect: Dialect, column_keys: tuple[str, ...] | None = None
) -> Prepared:
    """`prepare`, remembered per statement (by identity), dialect and column keys: for
    statements built once, at import or per shape."""
    return prepare(statement, dialect, column_keys)


@contextmanager
def dbapi_cursor(engine: Engine) -> Iterator[Any]:
    """A cursor on a pooled DB-API connection, given back to the pool (its transaction rolled
    back) on leaving: for reads."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    finally:
        connection.close()


def fetch_all(cursor: Any, prepared: Prepared, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    sql, parameters = prepared.parameters(values)
    cursor.execute(sql, parameters)
    return list(cursor.fetchall())


def execute_many(cursor: Any, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> None:
    """One statement for many rows (all with the same keys, no expanding lists), nothing
    returned."""
    cursor.executemany(prepared.sql, [prepared.parameters(row)[1] for row in rows])


class DriverCursor:
    """Runs statements on the DB-API connection under a SQLAlchemy `Connection`, in its
    transaction; each statement compiled once per dialect and set of keys."""

    def __init__(self, connection: Connection) -> None:
        self.dialect = connection.dialect
        self._dbapi = connection.connection  # the pooled DB-API connection, same transaction

    def execute(self, statement: ClauseElement, values: Mapping[str, Any]) -> list[Any]:
        """Run once; the rows it returns, if any."""
        sql, parameters = prepared(statement, self.dialect, tuple(values)).parameters(values)
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            cursor.close()

    def execute_many(
        self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
    ) -> list[Any]:
        """Run once per row (all rows with the same keys); the rows returned, all together."""
        if not rows:
            return []
        compiled = prepared(statement, self.dialect, tuple(rows[0]))
        arguments = [compiled.parameters(row) for row in rows]
        cursor = self._dbapi.cursor()
        try:
            if self.dialect.name == "postgresql":  # psycopg: one pipelined round trip
                return _returned_many(cursor, arguments[0][0], [a for _, a in arguments])
            returned: list[Any] = []
            for sql, argument in arguments:  # sqlite3's executemany drops RETURNING rows
                cursor.execute(sql, argument)
                if cursor.description is not None:
                    returned.extend(cursor.fetchall())
            return returned
        finally:
            cursor.close()


def _returned_many(cursor: Any, sql: str, arguments: list[Any]) -> list[Any]:
    cursor.executemany(sql, arguments, returning=True)
    returned: list[Any] = []
    while True:
        if cursor.description is not None:
            returned.extend(cursor.fetchall())
        if not cursor.nextset():
            return returned
