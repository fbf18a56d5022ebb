"""The audit trail's own retention (default seven years): what is past it, and pruning it.

Audit events outlive the studies they describe. Nothing prunes them on its own: an operator
exports them first (`ferry audit export`), then prunes (`ferry retention audit --prune`), which
removes only a prefix of the hash chain and records where it now starts (`audit.prune`), so the
rest still verifies.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from audit.models import AuditEvent
from audit.prune import Pruned, prune_before

_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]


def count_older(engine: Engine, now: datetime, days: int) -> tuple[int, datetime | None]:
    """How many events are older than `days`, and when the oldest event was written."""
    cutoff = now - timedelta(days=days)
    with engine.connect() as connection:
        older = connection.execute(
            select(func.count()).select_from(_TABLE).where(_TABLE.c.at < cutoff)
        ).scalar_one()
        oldest = connection.execute(select(func.min(_TABLE.c.at))).scalar_one()
    return int(older), oldest


def prune_older(engine: Engine, now: datetime, days: int, *, actor: str) -> Pruned:
    return prune_before(engine, now - timedelta(days=days), actor=actor)
