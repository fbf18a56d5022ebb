"""The audit trail's own retention: its oldest events pruned, and the rest still verifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError

from archive.store import Archive
from audit.models import AuditEvent
from audit.prune import prune_before
from audit.search import AuditQuery, iter_events
from audit.trail import AuditRecord, chain_head, record
from audit.verify import verify_chain
from tests.audit._records import tamper

NOW = datetime.now(UTC)
EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]


def _trail(archive: Archive) -> None:
    """Five events eight years old, then three of this year."""
    for years_ago, count in ((8, 5), (0, 3)):
        at = NOW - timedelta(days=365 * years_ago + 1)
        for n in range(count):
            record(archive.engine, AuditRecord(action="view", outcome="allowed",
                                               actor=f"user:{years_ago}-{n}", at=at))  # fmt: skip


def test_pruning_keeps_the_rest_verifiable(archive: Archive) -> None:
    _trail(archive)
    anchor = chain_head(archive.engine)
    pruned = prune_before(archive.engine, NOW - timedelta(days=2557), actor="cli")
    assert pruned.removed == 5 and pruned.start.pk == 5
    left = list(iter_events(archive.engine, AuditQuery()))
    assert [e.action for e in left] == ["view"] * 3 + ["audit-pruned"]
    assert verify_chain(archive.engine).intact
    assert verify_chain(archive.engine, anchor).intact  # an anchor taken before still holds
    again = prune_before(archive.engine, NOW - timedelta(days=2557), actor="cli")
    assert again.removed == 0 and verify_chain(archive.engine).intact


def test_tampering_after_a_prune_is_still_found(archive: Archive) -> None:
    _trail(archive)
    prune_before(archive.engine, NOW - timedelta(days=2557), actor="cli")
    tamper(archive.engine, "UPDATE audit_event SET actor = 'someone-else' WHERE pk = 7")
    edited = verify_chain(archive.engine)
    assert not edited.intact and edited.first_broken_pk == 7
    tamper(archive.engine, "DELETE FROM audit_event WHERE pk = 6")
    assert "missing" in verify_chain(archive.engine).describe()


def test_the_trail_stays_append_only_after_a_prune(archive: Archive) -> None:
    _trail(archive)
    prune_before(archive.engine, NOW - timedelta(days=2557), actor="cli")
    with pytest.raises(DBAPIError, match="append-only"), archive.engine.begin() as connection:
        connection.execute(delete(EVENTS).where(EVENTS.c.pk == 7))


def test_the_command_reports_then_prunes(ferry_cli: Any, archive: Archive) -> None:
    _trail(archive)
    report = ferry_cli("retention", "audit")
    assert "older than 2557 days: 5" in report.out and verify_chain(archive.engine).intact
    assert len(list(iter_events(archive.engine, AuditQuery()))) == 8  # reported, not pruned
    pruned = ferry_cli("retention", "audit", "--prune")
    assert pruned.code == 0 and "pruned 5 events" in pruned.out, pruned.err
    assert ferry_cli("audit", "verify").code == 0


def test_a_pruned_sign_in_takes_its_institutions_along(archive: Archive) -> None:
    """A sign-in's institutions (`audit_event_institution`) go with the event, and a search by
    institution finds the kept events through them."""
    engine = archive.engine
    old, recent = NOW - timedelta(days=365 * 8), NOW - timedelta(days=1)
    for at in (old, recent):
        record(engine, AuditRecord(action="login", outcome="allowed", actor="user:a@ferry.test",
                                   actor_kind="user", institutions=(7, 3), at=at))  # fmt: skip
    by_institution = AuditQuery(institution_pks=(3,))
    assert len(list(iter_events(engine, by_institution))) == 2
    assert prune_before(engine, NOW - timedelta(days=2557), actor="cli").removed == 1
    [kept] = list(iter_events(engine, by_institution))
    assert kept.at == recent and '"institutions":[3,7]' in kept.detail
    with engine.connect() as connection:
        links = connection.execute(text("SELECT event_pk FROM audit_event_institution")).all()
    assert sorted(row[0] for row in links) == [kept.pk, kept.pk]
    assert verify_chain(engine).intact
