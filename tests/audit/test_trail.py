"""Appending to the audit trail: the chain, normalised input, the guard, the cost of an append."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import DBAPIError

from audit import AuditEvent, ChainHead, Outcome, chain_head, record, record_many
from audit.models import GENESIS_HASH
from audit.trail import DETAIL_MAX_CHARS, event_hash
from audit.verify import verify_chain
from tests.audit._records import T0, sample, seed, tamper


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        table = AuditEvent.__table__
        return list(connection.execute(select(table).order_by(table.c.pk)).mappings())


def test_the_chain_links_every_event_to_the_one_before(engine):
    seed(engine, 3)
    record(engine, sample(4, outcome=Outcome.DENIED, rule="default-deny"))
    stored = rows(engine)
    assert [row["pk"] for row in stored] == [1, 2, 3, 4]
    assert stored[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(stored):
        assert after["prev_hash"] == before["hash"]
    assert all(event_hash(row) == row["hash"] for row in stored)
    assert chain_head(engine) == ChainHead(4, stored[-1]["hash"])
    assert stored[3]["outcome"] == "denied"
    assert verify_chain(engine).intact


def test_an_empty_trail_has_the_genesis_head(engine):
    assert chain_head(engine) == ChainHead(0, GENESIS_HASH)
    report = verify_chain(engine)
    assert report.intact and report.checked == 0


def test_fields_are_stored_as_given(engine):
    record(engine, sample(7, detail={"b": 2, "a": [1, "x"]}))
    (row,) = rows(engine)
    assert row["at"] == T0.replace(minute=37)
    assert row["actor"] == "user:user1@example.org"
    assert row["institution_pk"] == 2
    assert (row["study_uid"], row["patient_id"]) == ("1.2.826.0.1.3680043.8.498.7", "PAT3")
    assert (row["accession_number"], row["transaction"]) == ("ACC7", "req-7")
    assert row["client_address"] == "192.0.2.10"
    assert json.loads(row["detail"]) == {"a": [1, "x"], "b": 2}


def test_a_batch_keeps_its_order_and_continues_the_chain(engine):
    record(engine, sample(1))
    record_many(engine, [sample(n, action=f"action-{n}") for n in (2, 3, 4)])
    record_many(engine, [])
    assert [row["action"] for row in rows(engine)[1:]] == ["action-2", "action-3", "action-4"]
    assert verify_chain(engine).checked == 4 and verify_chain(engine).intact


def test_values_from_clients_are_made_storable(engine):
    """Whatever a client put in a header or a DICOM attribute, recording never fails on it."""
    record(
        engine,
        sample(
            1,
            patient_id="NUL\x00AND\ud800SURROGATE",
            accession_number="A" * 500,
            client_address="2001:db8::1%eth0" + "x" * 100,
            reason="ünïcødé 東京",
            detail={"huge": "x" * (DETAIL_MAX_CHARS + 1)},
        ),
    )
    record(engine, sample(2, detail={"nul": "a\x00b", "bad": "\udfff"}))
    first, second = rows(engine)
    assert first["patient_id"] == "NUL\ufffdAND?SURROGATE"
    assert first["accession_number"] == "A" * 64
    assert len(first["client_address"]) == 64
    assert first["reason"] == "ünïcødé 東京"
    assert json.loads(first["detail"]) == {"truncated": True, "chars": DETAIL_MAX_CHARS + 12}
    assert json.loads(second["detail"]) == {"nul": "a\x00b", "bad": "\udfff"}
    assert verify_chain(engine).intact


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"action": ""}, "needs an action"),
        ({"outcome": "maybe"}, "maybe"),
        ({"at": datetime(2025, 1, 1)}, "timezone"),
    ],
)
def test_malformed_records_are_refused_before_touching_the_chain(engine, changes, message):
    with pytest.raises(ValueError, match=message):
        record(engine, sample(1, **changes))
    assert chain_head(engine).pk == 0


def test_the_database_refuses_updates_and_deletes(engine):
    seed(engine, 2)
    for statement in (
        "UPDATE audit_event SET actor = 'someone-else' WHERE pk = 1",
        "DELETE FROM audit_event WHERE pk = 2",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert verify_chain(engine).intact


def test_a_lost_head_row_is_rebuilt_from_the_last_event(engine):
    seed(engine, 3)
    tamper(engine, "DELETE FROM audit_chain_head")
    record(engine, sample(4))
    assert chain_head(engine).pk == 4
    assert verify_chain(engine).intact


class _RecordingCursor:
    """A DB-API cursor that notes the first word of each execute and executemany it runs."""

    def __init__(self, cursor: Any, statements: list[str]) -> None:
        self._cursor, self._statements = cursor, statements

    def execute(self, statement: str, *arguments: Any) -> Any:
        self._statements.append(statement.split()[0].upper())
        return self._cursor.execute(statement, *arguments)

    def executemany(self, statement: str, *arguments: Any) -> Any:
        self._statements.append(statement.split()[0].upper())
        return self._cursor.executemany(statement, *arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _RecordingConnection:
    """A pooled DB-API connection whose cursors note what they run."""

    def __init__(self, connection: Any, statements: list[str]) -> None:
        self._connection, self._statements = connection, statements

    def cursor(self) -> _RecordingCursor:
        return _RecordingCursor(self._connection.cursor(), self._statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_an_append_is_one_insert_and_one_head_update(engine, monkeypatch):
    record(engine, sample(1))  # warm: the head row exists, the statements are compiled
    statements: list[str] = []

    def remember(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement.split()[0].upper())

    # Statements through SQLAlchemy's Connection, and those run on a pooled DB-API connection.
    event.listen(engine, "before_cursor_execute", remember)
    raw_connection = engine.raw_connection
    monkeypatch.setattr(
        engine, "raw_connection", lambda: _RecordingConnection(raw_connection(), statements)
    )
    try:
        record(engine, sample(2))
        single = [s for s in statements if s in {"INSERT", "UPDATE", "SELECT"}]
        statements.clear()
        record_many(engine, [sample(n) for n in range(3, 13)])
        batch = [s for s in statements if s in {"INSERT", "UPDATE", "SELECT"}]
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    assert single == ["SELECT", "INSERT", "UPDATE"]  # lock the head, append, move the head
    assert batch == ["SELECT", "INSERT", "UPDATE"]  # ten events, one executemany
