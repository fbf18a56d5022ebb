"""Searching the audit trail: every criterion, time ranges, paging, daily statistics."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from audit import Outcome, record_many
from audit.search import AuditQuery, DailyCount, count_events_by_day, search_events
from foundation.errors import InvalidQuery
from tests.audit._records import T0, sample, seed


def pks(engine, query: AuditQuery) -> list[int]:
    return [entry.pk for entry in search_events(engine, query, limit=1000).entries]


@pytest.fixture
def seeded(engine):
    seed(engine, 12)  # events 1..12, one minute apart from T0 + 1 min
    return engine


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (AuditQuery(), list(range(12, 0, -1))),
        (AuditQuery(patient_id="PAT1"), [9, 5, 1]),
        (AuditQuery(study_uid="1.2.826.0.1.3680043.8.498.7"), [7]),
        (AuditQuery(accession_number="ACC11"), [11]),
        (AuditQuery(transaction="req-3"), [3]),
        (AuditQuery(actor="user:user0@example.org"), [12, 9, 6, 3]),
        (AuditQuery(actor="user:user0@example.org", patient_id="PAT1"), [9]),
        (AuditQuery(institution_pks=(1,)), [12, 10, 8, 6, 4, 2]),
        (AuditQuery(patient_id="pat1"), []),  # identifiers match exactly
        (AuditQuery(patient_id="%"), []),  # and are never patterns
    ],
)
def test_criteria(seeded, query, expected):
    assert pks(seeded, query) == expected


def test_action_and_outcome(engine):
    record_many(
        engine,
        [
            sample(1, action="store"),
            sample(2, action="download", outcome=Outcome.DENIED, rule="default-deny"),
            sample(3, action="download"),
            sample(4, action="download", outcome=Outcome.FAILED),
        ],
    )
    assert pks(engine, AuditQuery(action="download")) == [4, 3, 2]
    assert pks(engine, AuditQuery(outcome="denied")) == [2]
    assert pks(engine, AuditQuery(action="download", outcome="allowed")) == [3]
    (denied,) = search_events(engine, AuditQuery(outcome="denied")).entries
    assert (denied.rule, denied.outcome, denied.action) == ("default-deny", "denied", "download")


def test_time_range_is_inclusive_from_and_exclusive_to(seeded):
    since, until = T0 + timedelta(minutes=3), T0 + timedelta(minutes=6)
    assert pks(seeded, AuditQuery(since=since, until=until)) == [5, 4, 3]
    assert pks(seeded, AuditQuery(since=T0 + timedelta(minutes=11))) == [12, 11]
    assert pks(seeded, AuditQuery(until=T0 + timedelta(minutes=2))) == [1]


def test_times_in_other_zones_mean_the_same_instant(seeded):
    from zoneinfo import ZoneInfo

    local = (T0 + timedelta(minutes=5)).astimezone(ZoneInfo("Pacific/Auckland"))
    assert pks(seeded, AuditQuery(since=local, until=local + timedelta(seconds=1))) == [5]


def test_paging_newest_first_covers_everything_once(seeded):
    seen, before = [], None
    while True:
        page = search_events(seeded, AuditQuery(), limit=5, before_pk=before)
        seen += [entry.pk for entry in page.entries]
        if page.next_before_pk is None:
            break
        before = page.next_before_pk
    assert seen == list(range(12, 0, -1))
    last = search_events(seeded, AuditQuery(), limit=12)
    assert last.next_before_pk is None


def test_entries_carry_everything_recorded(seeded):
    (entry,) = search_events(seeded, AuditQuery(transaction="req-4")).entries
    as_json = entry.as_json()
    assert as_json["at"] == "2025-03-01T09:34:00.000000Z"
    assert as_json["detail"] == {"route": "/dicom-web/studies", "n": 4}
    assert as_json["client_address"] == "192.0.2.10"
    assert len(as_json["hash"]) == len(as_json["prev_hash"]) == 64


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limits_out_of_range_are_refused(engine, limit):
    with pytest.raises(InvalidQuery, match="limit"):
        search_events(engine, AuditQuery(), limit=limit)


def test_times_without_a_zone_are_refused(engine):
    with pytest.raises(InvalidQuery, match="timezone"):
        search_events(engine, AuditQuery(since=datetime(2025, 1, 1)))


def test_counts_per_day_action_and_outcome(engine):
    day = timedelta(days=1)
    record_many(
        engine,
        [
            sample(1, at=T0, action="search"),
            sample(2, at=T0, action="search"),
            sample(3, at=T0, action="search", outcome=Outcome.DENIED),
            sample(4, at=T0.replace(hour=23, minute=59, second=59), action="download"),
            sample(5, at=T0 + day, action="download"),
            sample(6, at=T0 + 2 * day, action="store", patient_id="OTHER"),
        ],
    )
    first, second = date(2025, 3, 1), date(2025, 3, 2)
    assert count_events_by_day(engine, AuditQuery(until=T0 + 2 * day)) == [
        DailyCount(first, "download", "allowed", 1),
        DailyCount(first, "search", "allowed", 2),
        DailyCount(first, "search", "denied", 1),
        DailyCount(second, "download", "allowed", 1),
    ]
    assert count_events_by_day(engine, AuditQuery(patient_id="OTHER")) == [
        DailyCount(date(2025, 3, 3), "store", "allowed", 1)
    ]
