"""Two processes storing the same instances at once: one indexes each, the other hears so.

The other process (a second Archive on its own engine, as another HTTP worker or bridge would
be) stores the same instances after this store's blobs are durable and before its commit.
This store's instance rows, inserted on the DB-API cursor (`foundation.driver_sql`), then
find the UIDs taken: those instances are refused as stored concurrently, the others are
stored, and no blob is left behind. On both databases, into a series already indexed (keys
from one query) and into a new one (the levels' upserts first).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from archive import outcomes
from archive.check import check_archive
from archive.outcomes import StoreOutcome
from archive.store import Archive
from ferry.app import build_archive
from ferry.settings import Settings
from tests import factories


def _store_with_race(
    archive: Archive, paths: list[Path], race: Callable[[], list[StoreOutcome]]
) -> tuple[list[StoreOutcome], list[StoreOutcome]]:
    """Store `paths`; `race` runs once, when their blobs are in place and before the commit
    (the first connection checkout after the spooled files were renamed into the store)."""
    raced: list[list[StoreOutcome]] = []

    def at_checkout(*_: Any) -> None:
        if not raced and not any(path.exists() for path in paths):
            raced.append(race())

    event.listen(archive.engine, "checkout", at_checkout)
    try:
        stored = archive.store_files(paths)
    finally:
        event.remove(archive.engine, "checkout", at_checkout)
    assert raced, "the other process never stored"
    return stored, raced[0]


@pytest.mark.parametrize("series_known", [True, False], ids=["known-series", "new-series"])
def test_instances_stored_meanwhile_are_refused_and_the_rest_stored(
    archive: Archive, settings: Settings, tmp_path: Path, series_known: bool
) -> None:
    spec = factories.StudySpec(patient_id="RACE-3")
    first, *ours = factories.write_series(tmp_path / "ours", 4, spec=spec)
    if series_known:
        assert [o.stored for o in archive.store_files([first])] == [True]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    copy = Path(shutil.copy(ours[1], theirs))  # the same instance, as the other sender sent it
    other_process = build_archive(settings)
    try:
        stored, raced = _store_with_race(archive, ours, lambda: other_process.store_files([copy]))
    finally:
        other_process.engine.dispose()

    assert [o.stored for o in raced] == [True]
    assert [o.stored for o in stored] == [True, False, True]
    refused = stored[1]
    assert refused.failure_reason == outcomes.DUPLICATE_SOP_INSTANCE
    assert refused.message == "stored concurrently by another request"
    assert not refused.conflict  # the same institution's own instance: not a UID conflict
    found = archive.find_instances(spec.study_uid)
    assert len(found) == (4 if series_known else 3)
    assert len({f.blob_key for f in found}) == len(found)
    assert check_archive(archive).consistent  # the refused instance's blob went
