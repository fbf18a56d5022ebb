"""Appending to the hash-chained audit trail: `record(engine, AuditRecord(...))`.

Each event's hash is SHA-256 over a canonical JSON form of its fields, its pk and the previous
event's hash, so editing, deleting or reordering a row breaks the chain (see `audit.verify`).
Appends are serialised by locking the one-row chain head: `SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite (plus a per-database lock in the process so threads queue instead of
spinning in SQLite's busy handler). One append is one INSERT and one UPDATE of the head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from audit.models import (
    GENESIS_HASH,
    HEAD_PK,
    AuditChainHead,
    AuditEvent,
    AuditEventInstitution,
    Outcome,
)
from foundation import metrics
from foundation.driver_sql import execute_many, fetch_all, prepared
from foundation.errors import AuditUnavailable

log = logging.getLogger(__name__)

DETAIL_MAX_CHARS = 4000
CHAIN_FIELDS = (
    "pk",
    "at",
    "actor",
    "actor_kind",
    "institution_pk",
    "action",
    "outcome",
    "rule",
    "reason",
    "study_uid",
    "patient_id",
    "accession_number",
    "transaction",
    "client_address",
    "detail",
    "prev_hash",
)
_TEXT_FIELDS = (
    "actor",
    "actor_kind",
    "action",
    "rule",
    "reason",
    "study_uid",
    "patient_id",
    "accession_number",
    "transaction",
    "client_address",
)
_TEXT_LIMITS = {
    name: column.type.length
    for name, column in AuditEvent.__table__.columns.items()
    if getattr(column.type, "length", None)
}


@dataclass(frozen=True)
class AuditRecord:
    """What the caller knows about an event; the trail adds position, time and hashes."""

    action: str
    outcome: Outcome | str
    actor: str = "anonymous"
    actor_kind: str = "anonymous"
    institution_pk: int | None = None
    rule: str = ""
    reason: str = ""
    study_uid: str = ""
    patient_id: str = ""
    accession_number: str = ""
    transaction: str = ""
    client_address: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None  # None: the moment it is recorded
    # Further institutions the event concerns (a sign-in: the person's), beyond `institution_pk`:
    # named in the hashed detail (`institutions`) and indexed in `audit_event_institution`.
    institutions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChainHead:
    """The last event's pk and hash: an anchor operators keep outside the database."""

    pk: int
    hash: str

    def __str__(self) -> str:
        return f"{self.pk}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """`PK:HASH`, as printed by `ferry audit head`; ValueError otherwise."""
        pk_text, _, digest = text.strip().partition(":")
        if not pk_text.isdigit() or len(digest) != 64 or not _is_hex(digest):
            raise ValueError(f"expected an anchor PK:SHA256HEX, got {text!r}")
        return cls(int(pk_text), digest.lower())


def record(engine: Engine, event: AuditRecord) -> None:
    """Append one event; AuditUnavailable when it cannot be written, ValueError if malformed."""
    record_many(engine, (event,))


def record_many(engine: Engine, events: Sequence[AuditRecord]) -> None:
    """Append events in order, in one transaction: one INSERT (executemany) and one head update.

    The caller must not go on with what it audits when this raises AuditUnavailable.
    """
    rows = [_row_values(event) for event in events]
    if not rows:
        return
    concerns = [sorted(set(event.institutions)) for event in events]
    try:
        if not _append_prepared(engine, rows, concerns):
            _append(engine, rows, concerns)  # the chain head's row is missing: seeded there
    except (SQLAlchemyError, OSError, engine.dialect.loaded_dbapi.Error) as error:
        cause = getattr(error, "orig", None) or error
        log.error("audit trail not writable, refusing %s: %s", events[0].action, cause)
        metrics.AUDIT_WRITE_FAILURES.labels(events[0].action).inc(len(events))
        raise AuditUnavailable("the audit trail cannot be written; try again later") from error


def _append(engine: Engine, rows: list[dict[str, Any]], concerns: list[list[int]]) -> None:
    with _appending(engine) as connection:
        head = _lock_head(connection)
        last_hash = _chain(rows, head)
        connection.execute(_INSERT_EVENTS, rows)
        links = _links(rows, concerns)
        if links:
            connection.execute(_INSERT_LINKS, links)
        connection.execute(_MOVE_HEAD, {"new_pk": rows[-1]["pk"], "new_hash": last_hash})


def _append_prepared(engine: Engine, rows: list[dict[str, Any]], concerns: list[list[int]]) -> bool:
    """`_append`'s statements, compiled once, on a pooled DB-API connection: an append is on
    every audited request's path, and SQLAlchemy's execution around each of its statements
    cost more than SQLite's work. False, with nothing written, when the head row is missing."""
    dialect = engine.dialect
    with _appending_dbapi(engine) as cursor:
        lock = _READ_HEAD if dialect.name == "sqlite" else _LOCK_HEAD
        found = fetch_all(cursor, prepared(lock, dialect), {})
        if not found:
            return False
        last_hash = _chain(rows, ChainHead(int(found[0][0]), str(found[0][1])))
        execute_many(cursor, prepared(_INSERT_EVENTS, dialect), rows)
        links = _links(rows, concerns)
        if links:
            execute_many(cursor, prepared(_INSERT_LINKS, dialect), links)
        execute_many(
            cursor,
            prepared(_MOVE_HEAD, dialect),
            [{"new_pk": rows[-1]["pk"], "new_hash": last_hash}],
        )
    return True


def _chain(rows: list[dict[str, Any]], head: ChainHead) -> str:
    """Number and hash the rows after `head`; the last row's hash."""
    last_hash = head.hash
    for position, row in enumerate(rows, start=head.pk + 1):
        row["pk"] = position
        row["prev_hash"] = last_hash
        row["hash"] = last_hash = event_hash(row)
    return last_hash


def _links(rows: list[dict[str, Any]], concerns: list[list[int]]) -> list[dict[str, int]]:
    return [
        {"event_pk": row["pk"], "institution_pk": pk}
        for row, pks in zip(rows, concerns, strict=True)
        for pk in pks
    ]


def chain_head(engine: Engine) -> ChainHead:
    """The newest event's pk and hash (0 and the genesis hash for an empty trail)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(AuditChainHead.last_pk, AuditChainHead.last_hash).where(
                AuditChainHead.pk == HEAD_PK  # type: ignore[arg-type]
            )
        ).first()
    return ChainHead(int(row[0]), str(row[1])) if row else _last_event(engine)


def event_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form: sorted-key JSON of CHAIN_FIELDS, UTC `...Z` time."""
    canonical = {name: values[name] for name in CHAIN_FIELDS}
    canonical["at"] = format_time(values["at"])
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row_values(event: AuditRecord) -> dict[str, Any]:
    """Normalise what a caller (or a client, through a caller) supplied into storable values."""
    if not event.action:
        raise ValueError("an audit event needs an action")
    at = event.at or datetime.now(UTC)
    if at.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware")
    values: dict[str, Any] = {
        "at": at.astimezone(UTC),
        "institution_pk": event.institution_pk,
        "outcome": Outcome(event.outcome).value,
        "detail": _detail_text(_with_institutions(event)),
    }
    for name in _TEXT_FIELDS:
        values[name] = _clean(name, getattr(event, name))
    return values


def _with_institutions(event: AuditRecord) -> Mapping[str, Any]:
    if not event.institutions:
        return event.detail
    return {**event.detail, "institutions": sorted(set(event.institutions))}


def _clean(name: str, text: str) -> str:
    """Fit a value to its column: NUL and lone surrogates (PostgreSQL refuses both) replaced."""
    text = str(text).replace("\x00", "\ufffd")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[: _TEXT_LIMITS[name]]


def _detail_text(detail: Mapping[str, Any]) -> str:
    """Small JSON; ASCII-escaped, so NUL and lone surrogates arrive as harmless `\\uXXXX`."""
    text = json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > DETAIL_MAX_CHARS:
        return json.dumps({"truncated": True, "chars": len(text)}, sort_keys=True)
    return text


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(engine: Engine) -> threading.Lock:
    key = engine.url.render_as_string(hide_password=True)
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


@contextmanager
def _appending_dbapi(engine: Engine) -> Iterator[Any]:
    """`_appending` on a pooled DB-API connection: a cursor in a transaction holding the
    chain's write lock (`BEGIN IMMEDIATE` on SQLite, the head's row lock on PostgreSQL)."""
    sqlite = engine.dialect.name == "sqlite"
    with _process_lock(engine) if sqlite else contextlib.nullcontext():
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                cursor.close()
        finally:
            connection.close()


@contextmanager
def _appending(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the chain's write lock until commit."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            yield connection
        return
    with _process_lock(engine), engine.connect() as connection:
        # pysqlite begins a deferred transaction only before DML, and none while one is open:
        # BEGIN IMMEDIATE said first is the transaction the statements below run in, without
        # switching the pooled connection to autocommit and back on every append.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise


# Built once: an append is on every request's path, and building a statement costs more than
# running it on SQLite.
_READ_HEAD = select(AuditChainHead.last_pk, AuditChainHead.last_hash).where(
    AuditChainHead.pk == HEAD_PK  # type: ignore[arg-type]
)
_LOCK_HEAD = _READ_HEAD.with_for_update()
_INSERT_EVENTS = insert(AuditEvent)
_INSERT_LINKS = insert(AuditEventInstitution)
_MOVE_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.pk == HEAD_PK)  # type: ignore[arg-type]
    .values(last_pk=bindparam("new_pk"), last_hash=bindparam("new_hash"))
)


def _lock_head(connection: Connection) -> ChainHead:
    query = _READ_HEAD if connection.dialect.name == "sqlite" else _LOCK_HEAD
    row = connection.execute(query).first()
    if row is not None:
        return ChainHead(int(row[0]), str(row[1]))
    _create_head(connection)
    row = connection.execute(query).one()
    return ChainHead(int(row[0]), str(row[1]))


def _create_head(connection: Connection) -> None:
    """Seed a missing head from the last event, so a lost head row never restarts the chain."""
    last = connection.execute(
        select(AuditEvent.pk, AuditEvent.hash).order_by(AuditEvent.pk.desc()).limit(1)  # type: ignore[attr-defined]
    ).first()
    values = {"pk": HEAD_PK, "last_pk": last[0] if last else 0}
    values["last_hash"] = last[1] if last else GENESIS_HASH
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(AuditChainHead).values(values).on_conflict_do_nothing()
        connection.execute(statement)
    else:
        connection.execute(insert(AuditChainHead).values(values))


def _last_event(engine: Engine) -> ChainHead:
    with engine.connect() as connection:
        last = connection.execute(
            select(AuditEvent.pk, AuditEvent.hash).order_by(AuditEvent.pk.desc()).limit(1)  # type: ignore[attr-defined]
        ).first()
    return ChainHead(int(last[0]), str(last[1])) if last else ChainHead(0, GENESIS_HASH)


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdefABCDEF" for character in text)
