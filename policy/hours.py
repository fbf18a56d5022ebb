"""Core hours and out of hours in an institution's own timezone (DST and midnight included)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from foundation.clock import as_utc


@dataclass(frozen=True)
class CoreHoursFacts:
    timezone: str = "UTC"
    weekdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})  # ISO: Monday is 1
    start: time = time(8, 0)
    end: time = time(18, 0)
    holidays: frozenset[date] = frozenset()


def parse_clock(text: str) -> time:
    hours, _, minutes = text.strip().partition(":")
    return time(int(hours), int(minutes or 0))


def local_time(now: datetime, timezone: str) -> datetime:
    """`now` must be aware; naive values are taken as UTC, never as the server's local time."""
    aware = as_utc(now)
    return aware.astimezone(ZoneInfo(timezone))


def in_core_hours(now: datetime, hours: CoreHoursFacts) -> bool:
    """A window whose end is before its start runs past midnight into the next day.

    The weekday and holiday of such a night window are those of the day it started.
    """
    local = local_time(now, hours.timezone)
    clock = local.time()
    if hours.start <= hours.end:
        day = local.date()
        inside = hours.start <= clock < hours.end
    elif clock >= hours.start:
        day, inside = local.date(), True
    else:
        day = date.fromordinal(local.date().toordinal() - 1)
        inside = clock < hours.end
    return inside and day.isoweekday() in hours.weekdays and day not in hours.holidays
