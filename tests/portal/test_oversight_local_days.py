"""Statistics count by the institution's days: a transfer at 23:30 UTC on Sunday 31 May 2026
is Monday 1 June in Europe/Berlin, so its day, week and month are June's (on both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

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
