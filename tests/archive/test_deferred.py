"""Stores acknowledged before their index rows (archive.deferred): a kill loses nothing that was
acknowledged, duplicates and another institution's UIDs are settled as by a direct store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from archive import outcomes
from archive.check import check_archive
from archive.deferred import JOURNAL_FOLDER, DeferredIndex
from archive.models import Instance, Series, Study
from archive.store import Archive
from ferry.settings import Settings
from tests import factories
from tests.factories import StudySpec
from tests.policy._people import add_institution

REPOSITORY = Path(__file__).resolve().parents[2]
NEVER = 3600.0  # an indexer that lingers this long commits only when flushed or stopped


def spool(archive: Archive, data_set: Dataset | bytes, name: str) -> Path:
    path = archive.blobs.spool_dir / name
    path.write_bytes(data_set if isinstance(data_set, bytes) else factories.part10_bytes(data_set))
    return path


def indexed(archive: Archive) -> dict[str, tuple[str, int | None, str]]:
    """SOP Instance UID: (study, owner, blob key) of every indexed instance."""
    statement = (
        select(Instance.sop_instance_uid, Study.study_instance_uid, Study.institution_pk,
               Instance.blob_key)
        .join(Series, Series.pk == Instance.series_pk)
        .join(Study, Study.pk == Series.study_pk)
    )  # fmt: skip
    with archive.engine.connect() as connection:
        return {row[0]: (row[1], row[2], row[3]) for row in connection.execute(statement)}


def journal_entries(archive: Archive) -> list[str]:
    root = archive.blobs.root / JOURNAL_FOLDER  # type: ignore[attr-defined]
    return sorted(p.name for p in root.rglob("*.entry")) if root.exists() else []


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ferry.app import build_archive
    from ferry.settings import Settings
    from archive.deferred import DeferredIndex

    data_dir, database_url, institution = sys.argv[1], sys.argv[2], int(sys.argv[3])
    archive = build_archive(Settings(data_dir=Path(data_dir), database_url=database_url))
    deferred = DeferredIndex(archive, linger=3600.0)
    deferred.start()
    for name in sys.argv[4:]:
        outcome = deferred.store(archive.blobs.spool_dir / name, institution)
        print(outcome.sop_instance_uid if outcome.stored else "refused", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # acknowledged, not indexed: the indexer lingers
    """
)


def test_acknowledged_instances_are_indexed_at_the_next_start_after_a_kill(
    settings: Settings, archive: Archive
) -> None:
    hospital = add_institution(archive.engine, "HOSP")
    spec = StudySpec()
    sent = {}
    for number in range(1, 6):
        ds = factories.ct_slice(32, 32, spec=replace(spec, instance_number=number))
        sent[str(ds.SOPInstanceUID)] = factories.part10_bytes(ds)
        spool(archive, sent[str(ds.SOPInstanceUID)], f"part-{number}.dcm")
    names = [f"part-{number}.dcm" for number in range(1, 6)]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    writer = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(settings.data_dir), settings.database_url,
         str(hospital), *names],
        env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert writer.returncode == -signal.SIGKILL, writer.stderr
    acknowledged = set(writer.stdout.split())
    assert acknowledged == set(sent)
    assert indexed(archive) == {}  # killed before any commit
    assert len(journal_entries(archive)) == 5
    assert check_archive(archive).orphan_blobs == []  # journalled blobs are not leftovers

    deferred = DeferredIndex(archive)
    deferred.start()
    try:
        rows = indexed(archive)
        assert set(rows) == acknowledged
        assert {owner for _, owner, _ in rows.values()} == {hospital}
        for uid, (_, _, key) in rows.items():
            with archive.blobs.open(key) as stored:
                assert stored.read() == sent[uid]
        assert journal_entries(archive) == []
    finally:
        deferred.stop()
    assert check_archive(archive).consistent


@pytest.fixture
def deferred(archive: Archive) -> Iterator[DeferredIndex]:
    index = DeferredIndex(archive, linger=NEVER)
    index.start()
    yield index
    index.stop()


def test_duplicates_while_pending_are_settled_as_when_indexed(
    archive: Archive, deferred: DeferredIndex
) -> None:
    hospital = add_institution(archive.engine, "HOSP")
    ds = factories.ct_slice(32, 32)
    assert deferred.store(spool(archive, ds, "a.dcm"), hospital).stored
    assert indexed(archive) == {}  # acknowledged, lingering

    again = deferred.store(spool(archive, ds, "b.dcm"), hospital)
    assert again.stored  # the same bytes: success, nothing written
    other = ds.copy()
    other.PatientName = "Other^Content"
    changed = deferred.store(spool(archive, other, "c.dcm"), hospital)
    assert changed.failure_reason == outcomes.DUPLICATE_SOP_INSTANCE

    deferred.flush()
    assert list(indexed(archive)) == [str(ds.SOPInstanceUID)]
    assert list(archive.blobs.spool_dir.iterdir()) == []
    assert check_archive(archive).consistent


def test_another_institution_cannot_join_a_pending_study(
    archive: Archive, deferred: DeferredIndex
) -> None:
    hospital = add_institution(archive.engine, "HOSP")
    other = add_institution(archive.engine, "OTHER")
    spec = StudySpec()
    first = factories.ct_slice(32, 32, spec=spec)
    assert deferred.store(spool(archive, first, "a.dcm"), hospital).stored

    intruder = factories.ct_slice(32, 32, spec=spec.new_series(2))
    refused = deferred.store(spool(archive, intruder, "b.dcm"), other)
    assert refused.failure_reason == outcomes.PROCESSING_FAILURE
    assert refused.conflict
    # The SOP Instance UID still pending: taken, for another institution too.
    taken = deferred.store(spool(archive, first, "c.dcm"), other)
    assert taken.conflict

    deferred.flush()
    rows = indexed(archive)
    assert list(rows) == [str(first.SOPInstanceUID)]
    assert rows[str(first.SOPInstanceUID)][:2] == (spec.study_uid, hospital)


def test_a_study_created_meanwhile_elsewhere_is_not_joined_at_commit(
    archive: Archive, deferred: DeferredIndex
) -> None:
    """Another process (STOW-RS, another bridge) cannot see what is pending here: should it
    create the study for its institution first, the commit finds the owner changed."""
    hospital = add_institution(archive.engine, "HOSP")
    other = add_institution(archive.engine, "OTHER")
    spec = StudySpec()
    mine = factories.ct_slice(32, 32, spec=spec)
    assert deferred.store(spool(archive, mine, "a.dcm"), hospital).stored
    theirs = factories.ct_slice(32, 32, spec=spec.new_series(2))
    [stored] = archive.store_files([spool(archive, theirs, "b.dcm")], institution_pk=other)
    assert stored.stored

    deferred.flush()
    rows = indexed(archive)
    assert list(rows) == [str(theirs.SOPInstanceUID)]
    assert rows[str(theirs.SOPInstanceUID)][1] == other
    report = check_archive(archive)
    assert len(report.orphan_blobs) == 1  # the acknowledged blob, kept for an operator
    assert journal_entries(archive) == []
