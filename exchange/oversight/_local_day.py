"""An institution's local time in SQL, for counting by its days, weeks and months.

PostgreSQL knows the time zone database: `timezone(zone, moment)`. SQLite does not, so a zone
is written out as its UTC offsets over the range counted: a CASE naming, from the newest
change back, the offset in force from each change on (`datetime(moment, '+60 minutes')`).
Offsets come from Python's own zone data; a change is found to the minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, case, func

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # nothing Ferry counts is older
STEP = timedelta(days=1)


def _minutes(zone: ZoneInfo, moment: datetime) -> int:
    offset = moment.astimezone(zone).utcoffset() or timedelta()
    return int(offset.total_seconds() // 60)


def _change_after(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first minute in (before, after] whose offset is after's (the offsets differ)."""
    target = _minutes(zone, after)
    while after - before > timedelta(minutes=1):
        middle = before + (after - before) / 2
        middle = middle.replace(second=0, microsecond=0)
        if middle <= before:
            middle = before + timedelta(minutes=1)
        if _minutes(zone, middle) == target:
            after = middle
        else:
            before = middle
    return after


def offsets(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """(from this UTC moment on, the zone's offset in minutes) over [start, end], oldest first;
    the first holds from before `start`."""
    found = [(start, _minutes(zone, start))]
    day = start
    while day < end:
        following = min(day + STEP, end)
        if _minutes(zone, following) != found[-1][1]:
            at = _change_after(zone, day, following)
            found.append((at, _minutes(zone, at)))
        day = following
    return found


def local_moment(dialect: str, zone: str, moment: Any, start: datetime, end: datetime) -> Any:
    """`moment` (UTC) as the wall-clock time in `zone`."""
    if dialect == "postgresql":
        return func.timezone(zone, moment)
    changes = offsets(ZoneInfo(zone), start, end)
    if len(changes) == 1 and changes[0][1] == 0:
        return moment
    shifts = [(moment >= at, f"{minutes:+d} minutes") for at, minutes in reversed(changes[1:])]
    first = f"{changes[0][1]:+d} minutes"
    modifier = case(*shifts, else_=first) if shifts else first
    return func.datetime(moment, modifier, type_=String)
