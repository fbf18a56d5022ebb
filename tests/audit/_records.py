"""Audit test data: plausible events, and raw SQL run past the append-only guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from audit import AuditRecord, Outcome, record_many

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def sample(number: int, **changes: object) -> AuditRecord:
    """The n-th of a plausible run of events, one minute apart."""
    values: dict[str, object] = {
        "action": "read-pixels",
        "outcome": Outcome.ALLOWED,
        "actor": f"user:user{number % 3}@example.org",
        "actor_kind": "user",
        "institution_pk": 1 + number % 2,
        "rule": "owner",
        "reason": "the study belongs to the principal's institution",
        "study_uid": f"1.2.826.0.1.3680043.8.498.{number}",
        "patient_id": f"PAT{number % 4}",
        "accession_number": f"ACC{number}",
        "transaction": f"req-{number}",
        "client_address": "192.0.2.10",
        "detail": {"route": "/dicom-web/studies", "n": number},
        "at": T0 + timedelta(minutes=number),
    }
    values.update(changes)
    return AuditRecord(**values)  # type: ignore[arg-type]


def seed(engine: Engine, count: int) -> None:
    record_many(engine, [sample(number) for number in range(1, count + 1)])


def tamper(engine: Engine, *statements: str) -> None:
    """Act as the database owner would: lift the append-only guard, then run raw SQL."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
        for statement in statements:
            connection.execute(text(statement))
