"""The archive: store received files, read what is stored, delete (the one path for removal).

Order of a store: parse every part, settle duplicates, make the blobs durable and rename
them, then commit the index rows. A crash before the commit leaves only orphan blobs, which
`ferry archive check --repair` removes; never an index row without its blob.
"""

from __future__ import annotations

import filecmp
import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, func, select

from archive import dicomjson, index, outcomes
from archive.blobstore import BlobStore
from archive.bulkdata import parse_bulk_path, read_bulk_value
from archive.models import Instance, Patient, Series, Study
from archive.outcomes import StoreOutcome
from archive.parse import InvalidInstance, ParsedInstance, read_received
from ferry.errors import InstanceNotFound, SeriesNotFound, StudyNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredInstance:
    """Enough to stream an instance: where its bytes are and how they are encoded."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int


class Archive:
    def __init__(self, engine: Engine, blobs: BlobStore, *, replace_duplicates: bool) -> None:
        self.engine = engine
        self.blobs = blobs
        self.replace_duplicates = replace_duplicates
        # SQLite has one writer; queueing here beats its busy handler's sleeps under load.
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    # -- store ---------------------------------------------------------------------------

    def store_files(
        self, paths: Sequence[Path], expected_study_uid: str | None = None
    ) -> list[StoreOutcome]:
        """Store spooled files (each consumed: stored or deleted); one outcome per file."""
        results: list[StoreOutcome | None] = [None] * len(paths)
        parsed: list[tuple[int, ParsedInstance]] = []
        for position, path in enumerate(paths):
            try:
                item = read_received(path)
            except InvalidInstance as error:
                path.unlink(missing_ok=True)
                results[position] = StoreOutcome(
                    "", "", failure_reason=error.reason, message=error.message
                )
                continue
            if expected_study_uid and item.study_instance_uid != expected_study_uid:
                item.path.unlink(missing_ok=True)
                results[position] = _failed(
                    item,
                    outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"StudyInstanceUID {item.study_instance_uid} differs from the request's "
                    f"{expected_study_uid}",
                )
                continue
            parsed.append((position, item))
        for position, outcome in self._store_parsed(parsed):
            results[position] = outcome
        return [r for r in results if r is not None]

    def _store_parsed(
        self, parsed: list[tuple[int, ParsedInstance]]
    ) -> list[tuple[int, StoreOutcome]]:
        done: list[tuple[int, StoreOutcome]] = []
        fresh, replacing = self._settle_duplicates(parsed, done)
        work = fresh + replacing
        if not work:
            return done
        entries = {}
        moves = []
        for position, item in work:
            key = self.blobs.new_key(item.study_instance_uid, item.sop_instance_uid)
            document = dicomjson.instance_json(
                item.dataset,
                item.study_instance_uid,
                item.series_instance_uid,
                item.sop_instance_uid,
                item.pixel_vr,
            )
            entries[position] = index.index_entry(item, document, key)
            moves.append((item.path, key))
        try:
            self.blobs.store(moves)
            old_keys, inserted = self._commit(entries, {p for p, _ in replacing})
        except Exception as error:  # disk full, database gone: nothing is indexed
            log.exception("store failed")
            self.blobs.delete(key for _, key in moves)
            for _path, _ in moves:
                _path.unlink(missing_ok=True)
            reason = (
                outcomes.OUT_OF_RESOURCES
                if isinstance(error, OSError)
                else outcomes.PROCESSING_FAILURE
            )
            return done + [(p, _failed(item, reason, "could not store")) for p, item in work]
        self.blobs.delete(old_keys)
        for position, item in work:
            if item.sop_instance_uid in inserted:
                done.append((position, _stored(item)))
            else:
                self.blobs.delete([entries[position].instance["blob_key"]])
                done.append(
                    (
                        position,
                        _failed(
                            item,
                            outcomes.DUPLICATE_SOP_INSTANCE,
                            "stored concurrently by another request",
                        ),
                    )
                )
        return done

    def _settle_duplicates(
        self, parsed: list[tuple[int, ParsedInstance]], done: list[tuple[int, StoreOutcome]]
    ) -> tuple[list[tuple[int, ParsedInstance]], list[tuple[int, ParsedInstance]]]:
        """Same UID, same bytes: success, nothing written. Other bytes: refused or replaced."""
        uids = [item.sop_instance_uid for _, item in parsed]
        with self.engine.connect() as connection:
            existing = (
                dict(
                    connection.execute(
                        select(Instance.sop_instance_uid, Instance.blob_key).where(
                            Instance.sop_instance_uid.in_(uids)
                        )
                    ).all()
                )
                if uids
                else {}
            )
        fresh, replacing = [], []
        seen: set[str] = set()
        for position, item in parsed:
            uid = item.sop_instance_uid
            if uid in seen:
                item.path.unlink(missing_ok=True)
                done.append(
                    (
                        position,
                        _failed(item, outcomes.DUPLICATE_SOP_INSTANCE, "sent twice in one request"),
                    )
                )
                continue
            seen.add(uid)
            if uid not in existing:
                fresh.append((position, item))
            elif self._same_bytes(item.path, existing[uid]):
                item.path.unlink(missing_ok=True)
                done.append((position, _stored(item)))
            elif self.replace_duplicates:
                replacing.append((position, item))
            else:
                item.path.unlink(missing_ok=True)
                done.append(
                    (
                        position,
                        _failed(
                            item,
                            outcomes.DUPLICATE_SOP_INSTANCE,
                            "another instance with this SOP Instance UID is stored",
                        ),
                    )
                )
        return fresh, replacing

    def _same_bytes(self, path: Path, key: str) -> bool:
        try:
            with self.blobs.open(key) as stored:
                stored_path = Path(stored.name)
            return filecmp.cmp(path, stored_path, shallow=False)
        except OSError:
            return False

    def _commit(
        self, entries: dict[int, index.IndexEntry], replacing: set[int]
    ) -> tuple[list[str], set[str]]:
        old_keys: list[str] = []
        with self._write_lock, self.engine.begin() as connection:
            inserted = index.insert_entries(
                connection, [e for p, e in entries.items() if p not in replacing]
            )
            for position in replacing:
                old = index.replace_entry(connection, entries[position])
                inserted.add(entries[position].instance["sop_instance_uid"])
                if old:
                    old_keys.append(old)
        return old_keys, inserted

    # -- read ----------------------------------------------------------------------------

    def _instance_query(self, study: str, series: str | None, instance: str | None):  # type: ignore[no-untyped-def]
        statement = (
            select(
                Study.study_instance_uid,
                Series.series_instance_uid,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.transfer_syntax_uid,
                Instance.blob_key,
                Instance.size,
            )
            .join(Series, Series.pk == Instance.series_pk)
            .join(Study, Study.pk == Series.study_pk)
            .where(Study.study_instance_uid == study)
        )
        if series is not None:
            statement = statement.where(Series.series_instance_uid == series)
        if instance is not None:
            statement = statement.where(Instance.sop_instance_uid == instance)
        return statement.order_by(
            Series.series_number, Series.pk, Instance.instance_number, Instance.pk
        )

    def find_instances(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[StoredInstance]:
        with self.engine.connect() as connection:
            rows = connection.execute(self._instance_query(study, series, instance)).all()
        if not rows:
            raise _not_found(study, series, instance)
        return [StoredInstance(*row) for row in rows]

    def read_metadata(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[bytes]:
        """Each instance's stored DICOM JSON, with the `{base}` placeholder still in it."""
        statement = self._instance_query(study, series, instance).with_only_columns(
            Instance.metadata_json
        )
        with self.engine.connect() as connection:
            documents = connection.execute(statement).scalars().all()
        if not documents:
            raise _not_found(study, series, instance)
        return list(documents)

    def read_bulk_data(self, study: str, series: str, instance: str, path: str) -> bytes:
        """Buffered for now: the viewing work streams it with ranges and frame offsets."""
        steps = parse_bulk_path(path)
        (stored,) = self.find_instances(study, series, instance)
        with self.blobs.open(stored.blob_key) as handle:
            return read_bulk_value(handle, steps)

    def series_version(self, study: str, series: str) -> tuple[int, int, int]:
        """Changes whenever an instance of the series is added, replaced or removed (ETags)."""
        statement = (
            select(
                func.count(Instance.pk),
                func.coalesce(func.max(Instance.pk), 0),
                func.coalesce(func.sum(Instance.size), 0),
            )
            .join(Series, Series.pk == Instance.series_pk)
            .join(Study, Study.pk == Series.study_pk)
            .where(Study.study_instance_uid == study, Series.series_instance_uid == series)
        )
        with self.engine.connect() as connection:
            count, newest, total = connection.execute(statement).one()
        if not count:
            raise SeriesNotFound(f"series {series} not found in study {study}")
        return int(count), int(newest), int(total)

    # -- delete --------------------------------------------------------------------------

    def delete(self, study: str, series: str | None = None, instance: str | None = None) -> int:
        """Remove index rows, then blobs; emptied series, studies and patients go too."""
        stored = self.find_instances(study, series, instance)
        with self._write_lock, self.engine.begin() as connection:
            uids = [s.sop_instance_uid for s in stored]
            for start in range(0, len(uids), 500):
                connection.execute(
                    delete(Instance).where(Instance.sop_instance_uid.in_(uids[start : start + 500]))
                )
            empty_series = select(Series.pk).where(
                ~select(Instance.pk).where(Instance.series_pk == Series.pk).exists()
            )
            connection.execute(delete(Series).where(Series.pk.in_(empty_series)))
            empty_studies = select(Study.pk).where(
                ~select(Series.pk).where(Series.study_pk == Study.pk).exists()
            )
            connection.execute(delete(Study).where(Study.pk.in_(empty_studies)))
            empty_patients = select(Patient.pk).where(
                ~select(Study.pk).where(Study.patient_pk == Patient.pk).exists()
            )
            connection.execute(delete(Patient).where(Patient.pk.in_(empty_patients)))
        self.blobs.delete(s.blob_key for s in stored)
        return len(stored)

    def iter_blob_keys(self) -> Iterable[str]:
        with self.engine.connect() as connection:
            yield from connection.execute(select(Instance.blob_key)).scalars()


def _stored(item: ParsedInstance) -> StoreOutcome:
    return StoreOutcome(
        item.sop_class_uid, item.sop_instance_uid, item.study_instance_uid, item.series_instance_uid
    )


def _failed(item: ParsedInstance, reason: int, message: str) -> StoreOutcome:
    return StoreOutcome(
        item.sop_class_uid,
        item.sop_instance_uid,
        item.study_instance_uid,
        item.series_instance_uid,
        failure_reason=reason,
        message=message,
    )


def _not_found(study: str, series: str | None, instance: str | None) -> Exception:
    if instance is not None:
        return InstanceNotFound(f"instance {instance} not found")
    if series is not None:
        return SeriesNotFound(f"series {series} not found in study {study}")
    return StudyNotFound(f"study {study} not found")
