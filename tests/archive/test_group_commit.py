"""Group commit: stores that reach the index commit while another commits share one transaction.

Each store still returns only once the transaction holding its rows has committed, and a SOP
Instance UID in two stores of one group is written once.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event

from archive import outcomes
from archive.check import check_archive
from archive.outcomes import StoreOutcome
from archive.store import Archive
from policy import store
from tests import factories


def _store_at_once(archive: Archive, batches: list[list[Path]], owner: int) -> list[StoreOutcome]:
    """Every batch stored by its own thread, all started together."""
    results: list[list[StoreOutcome]] = [[] for _ in batches]
    start = threading.Barrier(len(batches))

    def run(number: int) -> None:
        start.wait()
        for path in batches[number]:  # one store per file, as C-STOREs come
            results[number] += archive.store_files([path], None, owner)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [outcome for batch in results for outcome in batch]


def test_stores_waiting_for_a_commit_are_committed_together(archive: Archive, tmp_path: Path):
    owner = store.create_institution(archive.engine, "GROUP", "Group").pk
    spec = factories.StudySpec()
    first = factories.write_series(tmp_path / "first", 1, spec=spec)
    waiting = [
        factories.write_series(tmp_path / f"w{n}", 1, spec=spec.new_series(n + 2)) for n in range(3)
    ]
    in_commit, release = threading.Event(), threading.Event()
    commits: list[int] = []

    def hold_the_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INSTANCE") and not in_commit.is_set():
            in_commit.set()
            release.wait(30)

    event.listen(archive.engine, "before_cursor_execute", hold_the_first)
    event.listen(archive.engine, "commit", lambda _conn: commits.append(1))
    try:
        held = threading.Thread(target=lambda: archive.store_files(first, None, owner))
        held.start()
        assert in_commit.wait(30)
        others = [
            threading.Thread(target=lambda paths=paths: archive.store_files(paths, None, owner))
            for paths in waiting
        ]
        for thread in others:
            thread.start()
        while len(archive._group._waiting) < len(waiting):  # all three wait for the first
            threading.Event().wait(0.01)
        release.set()
        for thread in [held, *others]:
            thread.join(30)
    finally:
        event.remove(archive.engine, "before_cursor_execute", hold_the_first)

    assert len(commits) == 2  # the first store's transaction, then one for the three
    assert len(archive.find_instances(spec.study_uid)) == 4
    assert check_archive(archive).consistent


def test_parallel_stores_keep_every_instance(archive: Archive, tmp_path: Path):
    owner = store.create_institution(archive.engine, "GROUP", "Group").pk
    spec = factories.StudySpec()
    batches = [
        factories.write_series(tmp_path / f"s{n}", 5, spec=spec.new_series(n + 1)) for n in range(4)
    ]

    results = _store_at_once(archive, batches, owner)

    assert [outcome.stored for outcome in results] == [True] * 20
    assert len(archive.find_instances(spec.study_uid)) == 20
    assert check_archive(archive).consistent


def test_one_uid_in_parallel_stores_is_written_once(archive: Archive, tmp_path: Path):
    owner = store.create_institution(archive.engine, "GROUP", "Group").pk
    spec = factories.StudySpec()
    [original] = factories.write_series(tmp_path / "original", 1, spec=spec)
    copies = []
    for n in range(4):
        (tmp_path / f"copy{n}").mkdir()
        copies.append([Path(shutil.copy(original, tmp_path / f"copy{n}" / original.name))])

    results = _store_at_once(archive, copies, owner)

    assert sum(outcome.stored for outcome in results) >= 1
    for outcome in results:
        assert outcome.stored or outcome.failure_reason == outcomes.DUPLICATE_SOP_INSTANCE
    assert len(archive.find_instances(spec.study_uid)) == 1
    assert check_archive(archive).consistent  # no blob left behind by the stores not kept
