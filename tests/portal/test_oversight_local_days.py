"""Oversight counts by the institution's days: a transfer at 23:30 UTC on Sunday 31 May 2026
is Monday 1 June in Europe/Berlin, so its day, week and month are June's (on both databases),
and `from`/`to` days of the API and the command line are the institution's days too."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from audit.trail import AuditRecord, record
from exchange.models import Transfer
from policy import store
from tests.conftest import RunningServer
from tests.portal._oversight_world import World, build_world

LATE = datetime(2026, 5, 31, 23, 30, tzinfo=UTC)  # 01:30 CEST on Monday 1 June


@pytest.fixture
def world(server: RunningServer, tmp_path: Path) -> Iterator[World]:
    built = build_world(server, tmp_path)
    engine = server.archive.engine
    with engine.begin() as connection:
        connection.execute(
            update(Transfer).where(Transfer.public_id == built.ids["t1"])  # type: ignore[arg-type]
            .values(sent_at=LATE, created_at=LATE)
        )  # fmt: skip
    try:
        yield built
    finally:
        built.http.close()


def _periods(world: World, **params: Any) -> set[tuple[str, str]]:
    answer = world.get("a-admin", "/oversight/statistics", params={"institution": "A", **params})
    assert answer.status_code == 200, answer.text
    volumes = answer.json()["volumes"]
    return {(v["period"], v["modality"]) for v in volumes if v["direction"] == "sent"}


def test_a_late_transfer_counts_on_the_institution_s_next_day(world: World) -> None:
    engine = world.server.archive.engine
    assert ("2026-05-31", "CT") in _periods(world)  # in UTC, as before
    store.update_institution(engine, world.pks["A"], timezone="Europe/Berlin")
    answer = world.get("a-admin", "/oversight/statistics", params={"institution": "A"})
    assert answer.json()["timezone"] == "Europe/Berlin"
    assert ("2026-06-01", "CT") in _periods(world)
    assert ("2026-06-01", "CT") in _periods(world, interval="week")  # a Monday, locally
    assert ("2026-06-01", "CT") in _periods(world, interval="month")
    assert ("2026-06-01", "CT") in _periods(world, **{"from": "2026-06-01", "to": "2026-06-01"})
    assert ("2026-06-01", "CT") not in _periods(world, **{"from": "2026-05-31", "to": "2026-05-31"})
    assert ("2026-06-12", "MR") in _periods(world)  # 10:00 UTC: the same day in Berlin


def test_a_zone_s_offsets_change_on_the_minute_it_changes() -> None:
    from zoneinfo import ZoneInfo

    from exchange.oversight._local_day import offsets

    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert offsets(ZoneInfo("Europe/Berlin"), start, end) == [
        (start, 60),
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), 120),
        (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), 60),
    ]
    assert offsets(ZoneInfo("Asia/Kolkata"), start, end) == [(start, 330)]


def _transactions(world: World, **params: Any) -> list[str]:
    answer = world.get("a-admin", "/oversight/transactions", params={"institution": "A", **params})
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def _reasons(world: World, **params: Any) -> list[str]:
    asked = {"institution": "A", "action": "administer", **params}
    answer = world.get("a-admin", "/oversight/audit", params=asked)
    assert answer.status_code == 200, answer.text
    return [event["reason"] for event in answer.json()["events"]]


def test_transactions_and_the_trail_read_days_as_the_institution_s(world: World) -> None:
    engine, t1 = world.server.archive.engine, world.ids["t1"]
    record(engine, AuditRecord("administer", "allowed", "user:a-admin@ferry.test", "user",
                               institution_pk=world.pks["A"], reason="late", at=LATE))  # fmt: skip
    may_31, june_1 = {"from": "2026-05-31", "to": "2026-05-31"}, {"from": "2026-06-01"}
    assert t1 in _transactions(world, **may_31) and "late" in _reasons(world, **may_31)
    store.update_institution(engine, world.pks["A"], timezone="Europe/Berlin")
    assert t1 not in _transactions(world, **may_31) and "late" not in _reasons(world, **may_31)
    assert t1 in _transactions(world, **june_1, to="2026-06-01")
    assert "late" in _reasons(world, **june_1, to="2026-06-01")
    assert t1 in _transactions(world, to="2026-05-31T23:45:00Z")  # a time is a time
    assert t1 not in _transactions(world, **{"from": "2026-05-31T23:45:00+00:00"})


def test_the_command_line_reads_days_as_the_institution_s(world: World, ferry_cli: Any) -> None:
    engine, t1 = world.server.archive.engine, world.ids["t1"]
    store.update_institution(engine, world.pks["A"], timezone="Europe/Berlin")

    def run(*args: str) -> str:
        ran = ferry_cli("oversight", *args, "--institution", "A", "--csv", "-")
        assert ran.code == 0, ran.err
        return str(ran.out)

    june_1 = ("--from", "2026-06-01", "--to", "2026-06-01")
    may_31 = ("--from", "2026-05-31", "--to", "2026-05-31")
    assert t1 in run("transactions", *june_1) and t1 not in run("transactions", *may_31)
    daily = list(csv.DictReader(io.StringIO(run("statistics", *june_1))))
    assert [(r["period"], r["modality"]) for r in daily if r["section"] == "volume"] == [
        ("2026-06-01", "CT")
    ]
    assert not [r for r in csv.DictReader(io.StringIO(run("statistics", *may_31)))
                if r["section"] == "volume"]  # fmt: skip
    backwards = ferry_cli("oversight", "transactions", "--institution", "A",
                          "--from", "2026-05-31T22:30:00Z", "--to", "2026-05-31")  # fmt: skip
    assert backwards.code == 1 and "starts after it ends" in backwards.err  # 31 May ends 22:00Z
