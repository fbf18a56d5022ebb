"""Statistics of one institution's exchange, for workflow planning: volumes, turnaround, failures.

Volumes and failures are counted by the database (GROUP BY a day, week starting Monday, or
month of the institution's time zone, `_local_day`; the same on SQLite and PostgreSQL).
Turnaround (request to answer; sent to delivered to downloaded) is a median and a 90th
percentile, computed here over at most `MAX_SAMPLES` of the newest pairs per measure, so a
long range costs a bounded query.

Volumes count transfers that moved (not drafts, not still collecting, not refused or failed),
by when they were sent (a pushed study: when it arrived). A transfer counts by the state it
stood in when it ended (`Transfer.ended_from`: retention, or a deletion, ended it), so last
month's failures stay failures after their studies are gone. Studies, instances and bytes are
those of the transfers' studies still in the archive; a study with several modalities counts in
each.
"""

from __future__ import annotations

import statistics as stats
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, String, and_, case, exists, func, literal, or_, select, union_all

from exchange.models import ENDED_BY_RETENTION, UNTAKEN, Origin, TransferStatus
from exchange.oversight._local_day import EARLIEST, local_moment
from exchange.oversight._tables import (
    INSTANCE,
    REQUEST,
    SERIES,
    STUDY,
    TRANSFER,
    TRANSFER_EVENT,
    TRANSFER_STUDY,
)
from exchange.oversight.transactions import ANSWERED, transfer_times
from exchange.request_models import RequestStatus
from exchange.transfer_endings import RETENTION_ACTOR
from foundation.errors import InvalidQuery

INTERVALS = ("day", "week", "month")
MAX_SAMPLES = 20_000
NOT_MOVED = (
    TransferStatus.DRAFT.value,
    TransferStatus.COLLECTING.value,
    TransferStatus.REFUSED.value,
    TransferStatus.FAILED.value,
)
TRANSFER_FAILURES = (
    TransferStatus.FAILED.value,
    TransferStatus.PARTIAL.value,
    TransferStatus.REFUSED.value,
    TransferStatus.NEEDS_RECONCILIATION.value,
    TransferStatus.RETURNED.value,
)
# A transfer retention ended before anyone at the receiver took it (exchange.models.UNTAKEN).
EXPIRED_UNUSED = "expired-unused"
REQUEST_FAILURES = (RequestStatus.EXPIRED.value,)


@dataclass(frozen=True)
class Volume:
    period: date
    direction: str
    counterpart_pk: int
    modality: str
    transactions: int
    studies: int
    instances: int
    bytes: int


@dataclass(frozen=True)
class Turnaround:
    measure: str  # request-answer, sent-delivered, delivered-downloaded, sent-downloaded
    direction: str
    count: int
    median_seconds: float | None
    p90_seconds: float | None
    sampled: bool


@dataclass(frozen=True)
class Failure:
    period: date
    direction: str
    counterpart_pk: int
    kind: str
    state: str
    count: int


@dataclass(frozen=True)
class Report:
    institution_pk: int
    interval: str
    since: datetime | None
    until: datetime | None
    volumes: tuple[Volume, ...]
    turnaround: tuple[Turnaround, ...]
    failures: tuple[Failure, ...]
    codes: Mapping[int, str]
    timezone: str = "UTC"  # the zone whose days, weeks and months the periods are


def compute(
    engine: Engine,
    institution_pk: int,
    since: datetime | None,
    until: datetime | None,
    interval: str = "day",
    codes: Mapping[int, str] | None = None,
    timezone: str = "UTC",
) -> Report:
    if interval not in INTERVALS:
        raise InvalidQuery(f"interval is one of {', '.join(INTERVALS)}")
    for moment in (since, until):
        if moment is not None and moment.utcoffset() is None:
            raise InvalidQuery("times must carry a timezone")
    if since and until and since >= until:
        raise InvalidQuery("the range starts after it ends")
    zone = _zone(timezone)
    window = _Window(engine.dialect.name, institution_pk, since, until, interval, zone)
    with engine.connect() as connection:
        volumes = tuple(Volume(_day(r[0]), *r[1:]) for r in connection.execute(window.volumes()))
        failures = tuple(Failure(_day(r[0]), *r[1:]) for r in connection.execute(window.failures()))
        turnaround = tuple(window.turnaround(connection))
    return Report(
        institution_pk, interval, since, until, volumes, turnaround, failures, dict(codes or {}),
        zone,
    )  # fmt: skip


def _zone(name: str) -> str:
    try:
        return ZoneInfo(name or "UTC").key
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidQuery(f"unknown time zone {name[:64]!r}") from None


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class _Window:
    dialect: str
    me: int
    since: datetime | None
    until: datetime | None
    interval: str
    zone: str = "UTC"

    def period(self, moment: Any) -> Any:
        """The first day (local) of the day, week (Monday) or month `moment` falls in, as text."""
        start = self.since or EARLIEST
        end = self.until or datetime.now(UTC) + timedelta(days=2)  # past it: the last offset
        local = local_moment(self.dialect, self.zone, moment, start, max(start, end))
        if self.dialect == "postgresql":
            day = local if self.interval == "day" else func.date_trunc(self.interval, local)
            return func.to_char(day, "YYYY-MM-DD", type_=String)
        if self.interval == "week":
            return func.date(local, "weekday 0", "-6 days", type_=String)
        if self.interval == "month":
            return func.strftime("%Y-%m-01", local, type_=String)
        return func.date(local, type_=String)

    def within(self, moment: Any) -> list[Any]:
        bounds = []
        if self.since is not None:
            bounds.append(moment >= self.since)
        if self.until is not None:
            bounds.append(moment < self.until)
        return bounds

    def sides(self, sender: Any, receiver: Any) -> tuple[Any, Any, Any]:
        """(whether it is ours, sent or received, the other institution)."""
        ours = or_(sender == self.me, receiver == self.me)
        direction = case((sender == self.me, "sent"), else_="received")
        counterpart = case((sender == self.me, receiver), else_=sender)
        return ours, direction, counterpart

    def volumes(self) -> Any:
        t = TRANSFER.c
        studies = union_all(
            select(TRANSFER_STUDY.c.transfer_pk, TRANSFER_STUDY.c.study_instance_uid),
            select(t.pk, t.study_instance_uid).where(t.origin == Origin.PUSH.value),
        ).subquery("moved")
        when = func.coalesce(t.sent_at, t.created_at)
        ours, direction, counterpart = self.sides(
            t.sender_institution_pk, t.destination_institution_pk
        )
        period = self.period(when)
        modality = func.coalesce(SERIES.c.modality, "")
        keys = (period, direction, counterpart, modality)
        return (
            select(
                *keys,
                func.count(t.pk.distinct()),
                func.count(STUDY.c.pk.distinct()),
                func.count(INSTANCE.c.pk),
                func.coalesce(func.sum(INSTANCE.c.size), 0),
            )
            .select_from(TRANSFER)
            .join(studies, studies.c.transfer_pk == t.pk)
            .outerjoin(STUDY, STUDY.c.study_instance_uid == studies.c.study_instance_uid)
            .outerjoin(SERIES, SERIES.c.study_pk == STUDY.c.pk)
            .outerjoin(INSTANCE, INSTANCE.c.series_pk == SERIES.c.pk)
            .where(ours, _standing().not_in(NOT_MOVED), *self.within(when))
            .group_by(*keys)
            .order_by(*keys)
        )

    def failures(self) -> Any:
        t = TRANSFER.c
        when = func.coalesce(t.sent_at, t.created_at)
        ours, direction, counterpart = self.sides(
            t.sender_institution_pk, t.destination_institution_pk
        )
        kind = case((t.origin == Origin.PUSH.value, "push"), else_="transfer")
        standing = _standing()
        unused = _ran_out_unused(standing)
        state = case((unused, EXPIRED_UNUSED), else_=standing)
        transfers = select(
            self.period(when).label("period"), direction.label("direction"),
            counterpart.label("counterpart"), kind.label("kind"), state.label("state"),
        ).where(
            ours, or_(standing.in_(TRANSFER_FAILURES), unused), *self.within(when)
        )  # fmt: skip
        r = REQUEST.c
        ours, direction, counterpart = self.sides(
            r.requesting_institution_pk, r.asked_institution_pk
        )
        requests = select(
            self.period(r.created_at), direction, counterpart, literal("request", String),
            r.status,
        ).where(ours, r.status.in_(REQUEST_FAILURES), *self.within(r.created_at))  # fmt: skip
        rows = union_all(transfers, requests).subquery("failed")
        keys = tuple(
            rows.c[name] for name in ("period", "direction", "counterpart", "kind", "state")
        )
        return select(*keys, func.count()).group_by(*keys).order_by(*keys)

    def turnaround(self, connection: Any) -> Iterator[Turnaround]:
        t = TRANSFER.c
        times = transfer_times(self.me)
        ours, direction, _ = self.sides(t.sender_institution_pk, t.destination_institution_pk)
        sent = func.coalesce(t.sent_at, times.c.sent)
        pairs = {
            "sent-delivered": (sent, times.c.delivered),
            "delivered-downloaded": (times.c.delivered, times.c.downloaded),
            "sent-downloaded": (sent, times.c.downloaded),
        }
        for measure, (start, end) in pairs.items():
            statement = (
                select(direction, start, end)
                .select_from(TRANSFER)
                .join(times, times.c.transfer_pk == t.pk)
                .where(ours, t.status != "draft", start.is_not(None), end.is_not(None))
                .where(*self.within(start))
            )
            yield from self._measure(connection, measure, statement, start)
        r = REQUEST.c
        ours, direction, _ = self.sides(r.requesting_institution_pk, r.asked_institution_pk)
        statement = select(direction, r.created_at, r.closed_at).where(
            ours, r.status.in_(ANSWERED), r.closed_at.is_not(None), *self.within(r.created_at)
        )
        yield from self._measure(connection, "request-answer", statement, r.created_at)

    def _measure(
        self, connection: Any, measure: str, statement: Any, start: Any
    ) -> Iterator[Turnaround]:
        rows = connection.execute(statement.order_by(start.desc()).limit(MAX_SAMPLES + 1)).all()
        sampled = len(rows) > MAX_SAMPLES
        by_direction: dict[str, list[float]] = defaultdict(list)
        for side, began, ended in rows[:MAX_SAMPLES]:
            by_direction[side].append((ended - began).total_seconds())
        for side in ("sent", "received"):
            yield _summary(measure, side, by_direction.get(side, []), sampled)


def _standing() -> Any:
    """Where a transfer stands, or stood when it ended (`ended_from`): a failed transfer whose
    studies retention deleted is still a failure, and never a volume."""
    t = TRANSFER.c
    return func.coalesce(t.ended_from, t.status)


def _ran_out_unused(standing: Any) -> Any:
    """An ended transfer (expired or deleted) that nobody at the receiver had taken, ended by
    retention: the rule of its sender's `transfer-expired` email. A study deleted by a person
    ends its transfers too, and is not counted."""
    t, event = TRANSFER.c, TRANSFER_EVENT.c
    ended = [status.value for status in ENDED_BY_RETENTION]
    by_retention = exists().where(
        event.transfer_pk == t.pk, event.status.in_(ended), event.actor == RETENTION_ACTOR
    )
    return and_(
        t.status.in_(ended),
        standing.in_([status.value for status in UNTAKEN]),
        by_retention.correlate(TRANSFER),
    )


def _summary(measure: str, direction: str, seconds: Sequence[float], sampled: bool) -> Turnaround:
    if not seconds:
        return Turnaround(measure, direction, 0, None, None, sampled)
    ordered = sorted(seconds)
    p90 = stats.quantiles(ordered, n=10, method="inclusive")[8] if len(ordered) > 1 else ordered[0]
    return Turnaround(measure, direction, len(ordered), stats.median(ordered), p90, sampled)


CSV_HEADER = (
    "section", "period", "direction", "counterpart", "modality", "kind", "state", "measure",
    "transactions", "studies", "instances", "bytes", "count", "median_seconds", "p90_seconds",
    "sampled",
)  # fmt: skip


def csv_rows(report: Report) -> Iterator[Sequence[object]]:
    """One long table: a `section` column says which of the three a row belongs to."""
    code = report.codes.get
    for v in report.volumes:
        yield ("volume", v.period, v.direction, code(v.counterpart_pk, ""), v.modality, "", "",
               "", v.transactions, v.studies, v.instances, v.bytes, "", "", "", "")  # fmt: skip
    for t in report.turnaround:
        yield ("turnaround", "", t.direction, "", "", "", "", t.measure, "", "", "", "",
               t.count, t.median_seconds, t.p90_seconds, t.sampled)  # fmt: skip
    for f in report.failures:
        yield ("failure", f.period, f.direction, code(f.counterpart_pk, ""), "", f.kind, f.state,
               "", "", "", "", "", f.count, "", "", "")  # fmt: skip


def describe(report: Report) -> Iterator[str]:
    """Lines for the command line."""
    code = report.codes.get
    yield (
        f"volumes per {report.interval} ({report.timezone}): period direction counterpart modality "
        "transactions studies instances bytes"
    )
    for v in report.volumes:
        yield (f"  {v.period}  {v.direction:<8} {code(v.counterpart_pk, '?'):<12} "
               f"{v.modality or '-':<4} {v.transactions:>6} {v.studies:>6} {v.instances:>8} "
               f"{v.bytes:>14}")  # fmt: skip
    yield "turnaround: measure direction count median p90 (seconds)"
    for t in report.turnaround:
        median = "-" if t.median_seconds is None else f"{t.median_seconds:.0f}"
        p90 = "-" if t.p90_seconds is None else f"{t.p90_seconds:.0f}"
        yield f"  {t.measure:<21} {t.direction:<8} {t.count:>6} {median:>10} {p90:>10}"
    yield "failures: period direction counterpart kind state count"
    for f in report.failures:
        yield (f"  {f.period}  {f.direction:<8} {code(f.counterpart_pk, '?'):<12} "
               f"{f.kind:<8} {f.state:<21} {f.count:>6}")  # fmt: skip
