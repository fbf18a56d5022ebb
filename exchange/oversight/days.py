"""Days and times in oversight criteria: a day is one of the institution's own time zone.

`from` and `to` (API, portal, command line) are a day (`YYYY-MM-DD`), read in the zone the
institution's pages show times in, or an ISO 8601 time (UTC when it names no offset). A day
means from its start (`from`) or through its end (`to`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from foundation.clock import as_utc


def local_zone(name: str) -> ZoneInfo:
    """An institution's time zone (UTC if it names none Ferry knows)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_moment(text: str, *, end: bool, zone: tzinfo = UTC) -> datetime:
    """A day means from its start (`end` False) or through its end (`end` True), in `zone`."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end and day == date.max:
                raise ValueError
            local = datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
            return local.astimezone(UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ValueError(f"expected YYYY-MM-DD or an ISO 8601 time, got {text[:40]!r}") from None
    return as_utc(moment)


def read_range(
    since: str | None, until: str | None, zone: tzinfo
) -> tuple[datetime | None, datetime | None]:
    """(since, until) as UTC times; ValueError when the range starts after it ends."""
    start = parse_moment(since, end=False, zone=zone) if since else None
    end = parse_moment(until, end=True, zone=zone) if until else None
    if start is not None and end is not None and start >= end:
        raise ValueError("the range starts after it ends: 'from' must come before 'to'")
    return start, end
