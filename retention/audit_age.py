"""The audit trail's own retention (default seven years): what is past it, reported.

Events are not pruned. The trail is a hash chain whose first event links to a fixed genesis
value; removing its oldest events would leave a chain that `ferry audit verify` cannot tell
from one whose beginning was cut by an attacker. So Ferry reports what is past the period and
leaves removal to an operator's documented procedure (export, archive, then prune with a new
anchor: see docs/retention.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from audit.models import AuditEvent

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
