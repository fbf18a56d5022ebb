"""Verifying the chain: every kind of tampering a database owner could do is found, with its pk."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from audit import AuditEvent, chain_head, record
from audit.trail import CHAIN_FIELDS, event_hash
from audit.verify import BATCH, verify_chain
from tests.audit._records import sample, seed, tamper

# A new value for each field, valid for its column on both databases.
EDITS = {
    "at": "at = '2031-01-01 00:00:00'",
    "actor": "actor = 'user:mallory@example.org'",
    "actor_kind": "actor_kind = 'node'",
    "institution_pk": "institution_pk = 99",
    "action": "action = 'search'",
    "outcome": "outcome = 'denied'",
    "rule": "rule = 'allow-all'",
    "reason": "reason = 'nothing to see'",
    "study_uid": "study_uid = '1.2.3'",
    "patient_id": "patient_id = 'OTHER'",
    "accession_number": "accession_number = 'X'",
    "transaction": "\"transaction\" = 'other'",
    "client_address": "client_address = '203.0.113.9'",
    "detail": "detail = '{}'",
    "prev_hash": f"prev_hash = '{'1' * 64}'",
    "hash": f"hash = '{'2' * 64}'",
}


def test_every_field_is_covered_by_the_hash():
    assert set(EDITS) | {"pk"} == set(CHAIN_FIELDS) | {"hash"}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_editing_any_field_of_any_row_is_found_with_its_pk(engine, field):
    seed(engine, 5)
    for pk in (1, 3, 5):
        tamper(engine, f"UPDATE audit_event SET {EDITS[field]} WHERE pk = {pk}")
    report = verify_chain(engine)
    assert not report.intact
    assert report.first_broken_pk == 1
    # A changed stored hash also breaks the next row's link; anything else stays in its row.
    expected = {1, 2, 3, 4, 5} if field == "hash" else {1, 3, 5}
    assert {finding.pk for finding in report.findings} == expected
    assert report.broken == len(expected)
    assert "pk 3" in report.describe()


def test_deleting_a_middle_row_is_found(engine):
    seed(engine, 5)
    tamper(engine, "DELETE FROM audit_event WHERE pk = 3")
    report = verify_chain(engine)
    assert (report.first_broken_pk, report.broken, report.checked) == (4, 1, 4)
    assert report.findings[0].problem == "missing"
    assert "events 3..3 are missing" in report.describe()


def test_deleting_the_first_row_is_found(engine):
    seed(engine, 3)
    tamper(engine, "DELETE FROM audit_event WHERE pk = 1")
    assert verify_chain(engine).first_broken_pk == 2


def test_swapping_two_rows_is_found(engine):
    seed(engine, 5)
    tamper(
        engine,
        "UPDATE audit_event SET pk = 1000 WHERE pk = 2",
        "UPDATE audit_event SET pk = 2 WHERE pk = 3",
        "UPDATE audit_event SET pk = 3 WHERE pk = 1000",
    )
    report = verify_chain(engine)
    assert report.first_broken_pk == 2
    assert {finding.problem for finding in report.findings} >= {"edited", "broken-link"}


def test_a_row_rewritten_with_a_fresh_hash_breaks_the_next_link(engine):
    seed(engine, 4)
    forged = _row(engine, 2) | {"patient_id": "FORGED"}
    tamper(
        engine,
        f"UPDATE audit_event SET patient_id = 'FORGED', hash = '{event_hash(forged)}' WHERE pk = 2",
    )
    report = verify_chain(engine)
    assert [(f.pk, f.problem) for f in report.findings] == [(3, "broken-link")]


def test_deleting_the_last_rows_is_found_through_the_head(engine):
    seed(engine, 5)
    tamper(engine, "DELETE FROM audit_event WHERE pk >= 4")
    report = verify_chain(engine)
    assert [(f.pk, f.problem) for f in report.findings] == [(4, "head-mismatch")]


def test_truncation_with_a_rewritten_head_is_found_only_by_an_anchor(engine):
    """Documented limit: a consistent shorter chain is valid in itself; an outside anchor is not."""
    seed(engine, 5)
    anchor = chain_head(engine)
    last_kept = _row(engine, 3)
    tamper(
        engine,
        "DELETE FROM audit_event WHERE pk >= 4",
        f"UPDATE audit_chain_head SET last_pk = 3, last_hash = '{last_kept['hash']}'",
    )
    assert verify_chain(engine).intact
    report = verify_chain(engine, anchor=anchor)
    assert [(f.pk, f.problem) for f in report.findings] == [(5, "anchor-missing")]
    assert "truncated" in report.describe()


def test_a_rewritten_chain_is_found_by_an_anchor(engine):
    """Rewriting every hash after an edit makes a consistent chain; the anchor still disagrees."""
    seed(engine, 4)
    anchor = chain_head(engine)
    previous = _row(engine, 1)["hash"]
    statements = []
    for pk in (2, 3, 4):
        row = _row(engine, pk) | {"patient_id": "FORGED", "prev_hash": previous}
        previous = event_hash(row)
        statements.append(
            f"UPDATE audit_event SET patient_id = 'FORGED', prev_hash = '{row['prev_hash']}', "
            f"hash = '{previous}' WHERE pk = {pk}"
        )
    statements.append(f"UPDATE audit_chain_head SET last_hash = '{previous}'")
    tamper(engine, *statements)
    assert verify_chain(engine).intact
    report = verify_chain(engine, anchor=anchor)
    assert [(f.pk, f.problem) for f in report.findings] == [(4, "anchor-mismatch")]


def test_an_older_anchor_still_verifies_a_longer_chain(engine):
    seed(engine, 3)
    anchor = chain_head(engine)
    record(engine, sample(4))
    assert verify_chain(engine, anchor=anchor).intact


def test_verify_walks_past_one_batch(engine):
    seed(engine, BATCH * 2 + 5)
    tamper(engine, f"DELETE FROM audit_event WHERE pk = {BATCH + 1}")
    report = verify_chain(engine)
    assert (report.checked, report.first_broken_pk) == (BATCH * 2 + 4, BATCH + 2)


def _row(engine: Engine, pk: int) -> dict[str, object]:
    table = AuditEvent.__table__
    with engine.connect() as connection:
        return dict(connection.execute(select(table).where(table.c.pk == pk)).mappings().one())
