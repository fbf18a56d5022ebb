"""Statements compiled once and run on a pooled DB-API connection: the per-request queries.

SQLAlchemy's `Connection.execute` costs, per statement, a cache key over the statement's tree,
an execution context and a result object: several times what SQLite takes to run a small
indexed query. A statement that a request runs every time (a search's main query of a known
shape, its counts) is compiled here once per dialect into its SQL text, its parameters' order
and their bind processors (a `DateTime` stored as SQLite text, for instance), then run on the
DB-API cursor with the values it needs. Expanding parameters (`bindparam(..., expanding=True)`,
an `IN` list) are spliced in as one placeholder per value; an empty list matches nothing.

Rows come back as the DB-API gives them: use it for columns whose DB-API values are already
what the caller reads (integers, text, bytes), not for types SQLAlchemy converts on the way out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine
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
    processors: Mapping[str, Callable[[Any], Any]]
    expanding: frozenset[str]

    def parameters(self, values: Mapping[str, Any]) -> tuple[str, Sequence[Any] | dict[str, Any]]:
        """The SQL text (expanding lists spliced in) and the DB-API parameters for `values`."""
        merged = {**self.defaults, **values}
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


def prepare(statement: ClauseElement, dialect: Dialect) -> Prepared:
    """Compile `statement` for `dialect` (cache the result: compiling is the costly part)."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler), compiled
    binds = {name: bind for bind, name in compiled.bind_names.items()}  # as the SQL names them
    expanding = frozenset(name for name, bind in binds.items() if bind.expanding)
    processors = {}
    for name, bind in binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    defaults = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    return Prepared(
        sql=compiled.string,
        positional=bool(dialect.positional),
        order=tuple(compiled.positiontup or ()),
        defaults=defaults,
        processors=processors,
        expanding=expanding,
    )


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
