"""Hot statements run on the DB-API cursor, compiled once per dialect and parameter shape.

SQLAlchemy's `Connection.execute` spends several times what SQLite takes to run a small
statement (cache key, parameter processing, result wrapping, events). The few statements on
a per-instance path (the index rows of a C-STORE) are compiled here by SQLAlchemy's own
compiler, once per dialect and shape, and run on the cursor of a connection SQLAlchemy
checked out, inside whatever transaction that connection is in: the caller keeps its
`engine.begin()` / `engine.connect()` and may mix these with ordinary `execute` calls.

Bind processors and client-side insert defaults are applied as SQLAlchemy would; result rows
are the driver's plain tuples, so this is for columns whose driver values need no conversion
(integers, text). Engine events (`before_cursor_execute`) do not see these statements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Compiled:
    """SQL text in the driver's paramstyle, and how to turn values into its parameters."""

    sql: str
    names: tuple[str, ...] | None  # argument order for positional paramstyles; None: named
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    defaults: tuple[tuple[str, Callable[[Any], Any]], ...]  # client-side insert defaults

    def arguments(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        flat = _flatten(values)
        for name, default in self.defaults:
            flat[name] = default(None)
        for name, process in self.processors:
            flat[name] = process(flat[name])
        if self.names is None:
            return flat
        return [flat[name] for name in self.names]


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """A list value fills an expanding `IN` as SQLAlchemy names its parts: uids_1, uids_2..."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list):
            flat.update((f"{name}_{n}", item) for n, item in enumerate(value, 1))
        else:
            flat[name] = value
    return flat


def _shape(values: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    return tuple(
        (name, len(value) if isinstance(value, list) else -1) for name, value in values.items()
    )


@functools.lru_cache(maxsize=512)
def _compile(
    statement: ClauseElement, dialect: Dialect, shape: tuple[tuple[str, int], ...]
) -> _Compiled:
    lists = {name: [None] * length for name, length in shape if length >= 0}
    shaped = statement.params(lists) if lists else statement
    column_keys = [name for name, length in shape if length < 0]
    compiled = shaped.compile(
        dialect=dialect, column_keys=column_keys, compile_kwargs={"render_postcompile": True}
    )
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    expanded = dict(shape)
    processors: list[tuple[str, Callable[[Any], Any]]] = []
    for key, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            continue
        parts = expanded.get(key, -1)
        keys = [key] if parts < 0 else [f"{key}_{n}" for n in range(1, parts + 1)]
        processors.extend((name, process) for name in keys)
    defaults = []
    for column in getattr(compiled, "insert_prefetch", ()):
        default = column.default
        make = default.arg if default.is_callable else functools.partial(_constant, default.arg)
        defaults.append((column.key, make))
    return _Compiled(compiled.string, names, tuple(processors), tuple(defaults))


def _constant(value: Any, _context: Any) -> Any:
    return value


class DriverCursor:
    """Runs compiled statements on the DB-API connection under a SQLAlchemy `Connection`."""

    def __init__(self, connection: Connection) -> None:
        self.dialect = connection.dialect
        self._dbapi = connection.connection  # the pooled DB-API connection, same transaction

    def execute(self, statement: ClauseElement, values: Mapping[str, Any]) -> list[Any]:
        """Run once; the rows it returns, if any."""
        compiled = _compile(statement, self.dialect, _shape(values))
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(compiled.sql, compiled.arguments(values))
            return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            cursor.close()

    def execute_many(
        self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
    ) -> list[Any]:
        """Run once per row (all rows with the same keys); the rows returned, all together."""
        if not rows:
            return []
        compiled = _compile(statement, self.dialect, _shape(rows[0]))
        arguments = [compiled.arguments(row) for row in rows]
        cursor = self._dbapi.cursor()
        try:
            if self.dialect.name == "postgresql":  # psycopg: one pipelined round trip
                return _returned_many(cursor, compiled.sql, arguments)
            returned: list[Any] = []
            for argument in arguments:  # sqlite3's executemany drops RETURNING rows
                cursor.execute(compiled.sql, argument)
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
