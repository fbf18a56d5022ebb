"""Two processes storing one new study for two institutions: the second never joins the first's.

The owner check runs before the commit transaction, so another process (here a second Archive
on its own engine, as another HTTP worker or bridge would be) can create the same new study for
another institution in between. The commit reads the owners again and refuses what it would
otherwise have added to the other institution's study, naming no owner.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from archive.check import check_archive
from archive.store import Archive
from ferry.app import build_archive
from ferry.settings import Settings
from policy import store
from tests import factories


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # one writer on SQLite
def test_a_study_created_meanwhile_elsewhere_is_not_joined(
    archive: Archive, settings: Settings, tmp_path: Path
) -> None:
    mine = store.create_institution(archive.engine, "MINE", "Mine").pk
    theirs = store.create_institution(archive.engine, "THEIRS", "Theirs").pk
    spec = factories.StudySpec(patient_id="RACE-1")
    ours = factories.write_series(tmp_path / "ours", 2, spec=spec)
    # The other sender's instance of the same study (another patient row, so neither waits).
    other_spec = replace(spec.new_series(2), patient_id="RACE-2")
    other = factories.write_series(tmp_path / "other", 1, spec=other_spec)
    other_process = build_archive(settings)
    fired: list[list[Any]] = []

    def other_process_stores_first(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("INSERT INTO STUDY"):
            fired.append(other_process.store_files(other, None, theirs))

    event.listen(archive.engine, "before_cursor_execute", other_process_stores_first)
    try:
        outcomes = archive.store_files(ours, None, mine)
    finally:
        event.remove(archive.engine, "before_cursor_execute", other_process_stores_first)
        other_process.engine.dispose()

    assert [o.stored for o in fired[0]] == [True]  # the other institution's study exists
    assert [o.stored for o in outcomes] == [False, False]
    assert all(o.conflict and "THEIRS" not in o.message for o in outcomes)
    [found] = archive.find_instances(spec.study_uid)  # only the other's instance
    assert found.series_instance_uid == other_spec.series_uid
    assert check_archive(archive).consistent  # the refused instances left no blob behind
