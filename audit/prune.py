"""Pruning the audit trail's oldest events, past their own retention, keeping it verifiable.

Only a prefix of the chain goes: the events before the first one written at or after the
cutoff. Under the chain's write lock, they are deleted and the chain head records where the
chain now starts (the last pruned event's pk and hash), so `audit.verify` checks the rest from
there exactly as before, and a missing event anywhere after it is still found. The prune itself
is then appended to the trail ("audit-pruned", with that starting point), so the record of what
was removed, and when, is part of the chain it cannot be cut from without breaking it. Export
the events first (`ferry audit export`): pruning is irreversible.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select, text, update

from audit.models import HEAD_PK, AuditChainHead, AuditEvent, AuditEventInstitution
from audit.trail import AuditRecord, ChainHead, _appending, _lock_head, record

_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_HEAD = AuditChainHead.__table__  # type: ignore[attr-defined]
_LINKS = AuditEventInstitution.__table__  # type: ignore[attr-defined]
BATCH = 5000


_SQLITE_GUARD = (
    "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
)


@contextmanager
def _guard_lifted(connection: Connection) -> Iterator[None]:
    """The append-only triggers (migration 0003) let nothing delete events; the prune lifts the
    DELETE guard inside its own transaction, under the chain's lock, and puts it back before
    committing, so no other writer ever sees the trail unguarded (a failure rolls both back)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        yield
        connection.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
        return
    connection.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
    yield
    connection.execute(text(_SQLITE_GUARD))


@dataclass(frozen=True)
class Pruned:
    removed: int
    start: ChainHead  # the chain now starts after this event


def prune_before(engine: Engine, cutoff: datetime, *, actor: str) -> Pruned:
    """Remove the events before the first one at or after `cutoff`; audited."""
    with _appending(engine) as connection:
        head = _lock_head(connection)
        first_kept = connection.execute(
            select(func.min(_EVENTS.c.pk)).where(_EVENTS.c.at >= cutoff)
        ).scalar()
        through = int(first_kept) - 1 if first_kept is not None else head.pk
        start = connection.execute(
            select(_EVENTS.c.pk, _EVENTS.c.hash).where(_EVENTS.c.pk == through)
        ).first()
        if start is None:  # nothing old enough, or pruned already
            removed = 0
            found = connection.execute(
                select(_HEAD.c.pruned_pk, _HEAD.c.pruned_hash).where(_HEAD.c.pk == HEAD_PK)
            ).one()
            begins = ChainHead(int(found[0]), str(found[1]))
        else:
            begins = ChainHead(int(start[0]), str(start[1]))
            with _guard_lifted(connection):
                removed = connection.execute(
                    delete(_EVENTS).where(_EVENTS.c.pk <= through)
                ).rowcount
            connection.execute(delete(_LINKS).where(_LINKS.c.event_pk <= through))
            connection.execute(
                update(_HEAD)
                .where(_HEAD.c.pk == HEAD_PK)
                .values(pruned_pk=begins.pk, pruned_hash=begins.hash)
            )
    if removed:
        record(
            engine,
            AuditRecord(
                action="audit-pruned",
                outcome="allowed",
                actor=actor,
                actor_kind="system",
                rule="audit-retention",
                reason=f"{removed} events written before {cutoff.isoformat()} removed",
                detail={"start": str(begins), "removed": removed, "cutoff": cutoff.isoformat()},
            ),
        )
    return Pruned(removed, begins)
