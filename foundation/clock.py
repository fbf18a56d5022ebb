"""The clock: injected everywhere time decides something, so tests can move it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A moment from outside (a form, a JSON body, a command line): one without a zone is
    taken as UTC. Stored moments need no such help: every timestamp column hands back aware
    UTC datetimes (`foundation.timestamps`)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
