"""The archive: store received files, read what is stored, delete (the one path for removal).

Order of a store: parse every part, settle duplicates, make the blobs durable and rename
them, then commit the index rows. A crash before the commit leaves only orphan blobs, which
`ferry archive check --repair` removes; never an index row without its blob.
"""

from __future__ import annotations

import filecmp
import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Select,
    bindparam,
    delete,
    func,
    null,
    select,
    union_all,
    update,
)

from archive import dicomjson, index, outcomes
from archive.blobstore import BlobStore
from archive.derived import forget_derived
from archive.framecache import forget_layouts
from archive.models import Instance, Patient, Series, Study, StudyGrant
from archive.outcomes import StoreOutcome
from archive.parse import InvalidInstance, ParsedInstance, read_received
from archive.quickread import quick_read
from foundation.driver_sql import DriverCursor, dbapi_cursor, fetch_all, prepared
from foundation.errors import (
    InstanceNotFound,
    InsufficientStorage,
    SeriesNotFound,
    StudyNotFound,
    is_disk_full,
)

log = logging.getLogger(__name__)
_DIFFERENT_CONTENT = "an instance with this SOP Instance UID and different content is stored"
_UID_IN_USE = "a UID of this instance is already in use; not stored (use new UIDs)"


# Built once: constructing these costs more than running them, on every store.
_STUDY_OWNERS = select(index.STUDY.c.study_instance_uid, index.STUDY.c.institution_pk).where(
    index.STUDY.c.study_instance_uid.in_(bindparam("uids", expanding=True))
)
# What a store checks before its blobs are written, in one read: the instances already held
# under the received SOP Instance UIDs (where they live), then the received studies' owners
# (rows without a SOP Instance UID).
_HELD_AND_OWNERS = union_all(
    select(
        index.INSTANCE.c.sop_instance_uid,
        index.INSTANCE.c.blob_key,
        index.STUDY.c.study_instance_uid,
        index.STUDY.c.institution_pk,
    )
    .join(index.SERIES, index.SERIES.c.pk == index.INSTANCE.c.series_pk)
    .join(index.STUDY, index.STUDY.c.pk == index.SERIES.c.study_pk)
    .where(index.INSTANCE.c.sop_instance_uid.in_(bindparam("instances", expanding=True))),
    select(null(), null(), index.STUDY.c.study_instance_uid, index.STUDY.c.institution_pk).where(
        index.STUDY.c.study_instance_uid.in_(bindparam("studies", expanding=True))
    ),
)


@functools.cache
def _instance_query(by_series: bool, by_instance: bool, metadata: bool = False) -> Select[Any]:
    """Built once per shape, with bound parameters: the read paths run it on every request, and
    building a statement costs more than executing it."""
    columns: tuple[Any, ...] = (
        (Instance.metadata_json,)
        if metadata
        else (
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.sop_class_uid,
            Instance.transfer_syntax_uid,
            Instance.blob_key,
            Instance.size,
            Instance.crc32,
        )
    )
    statement = (
        select(*columns)
        .join(Series, Series.pk == Instance.series_pk)
        .join(Study, Study.pk == Series.study_pk)
        .where(Study.study_instance_uid == bindparam("study"))
    )
    if by_series:
        statement = statement.where(Series.series_instance_uid == bindparam("series"))
    if by_instance:
        statement = statement.where(Instance.sop_instance_uid == bindparam("instance"))
    return statement.order_by(
        Series.series_number, Series.pk, Instance.instance_number, Instance.pk
    )


def _instance_params(study: str, series: str | None, instance: str | None) -> dict[str, str]:
    params = {"study": study}
    if series is not None:
        params["series"] = series
    if instance is not None:
        params["instance"] = instance
    return params


# A CRC lands only on the row whose blob it was read from: a row replaced meanwhile names
# another blob (a new key), and keeps its own (unknown) CRC.
_REMEMBER_CRC = (
    update(index.INSTANCE)
    .where(
        index.INSTANCE.c.sop_instance_uid == bindparam("uid"),
        index.INSTANCE.c.blob_key == bindparam("key"),
        index.INSTANCE.c.crc32.is_(None),
    )
    .values(crc32=bindparam("crc"))
)

_STUDY_ACCESS = (
    select(
        Study.pk,
        Study.institution_pk,
        Patient.patient_id,
        Study.accession_number,
        select(StudyGrant.pk).where(StudyGrant.study_pk == Study.pk).exists(),
    )
    .join(Patient, Patient.pk == Study.patient_pk)
    .where(Study.study_instance_uid == bindparam("study"))
)
_STUDY_GRANTS = select(
    StudyGrant.institution_pk, StudyGrant.expires_at, StudyGrant.revoked_at, StudyGrant.actions
).where(StudyGrant.study_pk == bindparam("study_pk"))


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
    crc32: int | None = None  # the blob's CRC-32, once something has read it whole


@dataclass(frozen=True)
class Prepared:
    """A received instance ready to be written: its parse, blob key and index rows."""

    parsed: ParsedInstance
    blob_key: str
    entry: index.IndexEntry


@dataclass(frozen=True)
class _Held:
    """An instance already indexed under a received SOP Instance UID: where it lives."""

    blob_key: str
    study_instance_uid: str
    institution_pk: int | None

    def same_place(self, item: Prepared, institution_pk: int | None) -> bool:
        return (
            self.institution_pk == institution_pk
            and self.study_instance_uid == item.parsed.study_instance_uid
        )


@dataclass(frozen=True)
class StudyAccess:
    """Who owns a study and its grants: (institution, expires_at, revoked_at, actions) each."""

    study_instance_uid: str
    institution_pk: int | None
    grants: tuple[tuple[int, datetime | None, datetime | None, str], ...]
    patient_id: str = ""
    accession_number: str = ""


class Archive:
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        *,
        replace_duplicates: bool,
        min_free_bytes: int = 0,
        frame_cache_dir: Path | None = None,
        derived_dirs: tuple[Path, ...] = (),
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.replace_duplicates = replace_duplicates
        # The reserve left for reads, audit and the database: new instances stop before it.
        self.min_free_bytes = min_free_bytes
        # Derived from blobs and removed with them (`archive.framecache` sidecars).
        self.frame_cache_dir = frame_cache_dir
        # Caches laid out per blob (`archive.derived`): their folders go with the blobs.
        self.derived_dirs = derived_dirs
        # SQLite has one writer; queueing here beats its busy handler's sleeps under load.
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    # -- store ---------------------------------------------------------------------------

    def check_free_space(self) -> None:
        """InsufficientStorage when free space is below the reserve (FERRY_MIN_FREE_BYTES)."""
        free = self.blobs.free_bytes()
        if free < self.min_free_bytes:
            raise InsufficientStorage(
                f"not enough free storage: {free} bytes free, {self.min_free_bytes} kept in "
                "reserve; new instances are refused until space is freed"
            )

    def prepare(self, path: Path) -> Prepared | StoreOutcome:
        """Everything before disk and index: parse, check, DICOM JSON, index rows.

        Safe to run for many parts at once (threads); a failure consumes the file.
        """
        quick = quick_read(path)  # the common case in one pass; None: pydicom reads it
        if quick is None:
            try:
                item = read_received(path)
            except InvalidInstance as error:
                path.unlink(missing_ok=True)
                return StoreOutcome("", "", failure_reason=error.reason, message=error.message)
        else:
            item = quick.parsed
        try:
            key = self.blobs.new_key(item.study_instance_uid, item.sop_instance_uid)
            if quick is not None:
                document = quick.document
            else:
                assert item.dataset is not None
                document = dicomjson.instance_json(
                    item.dataset,
                    item.study_instance_uid,
                    item.series_instance_uid,
                    item.sop_instance_uid,
                    item.pixel_vr,
                )
            entry = index.index_entry(item, document, key)
        except Exception as error:  # hostile attribute values pydicom cannot convert
            log.warning("cannot index %s: %s", item.sop_instance_uid, error)
            item.path.unlink(missing_ok=True)
            return _failed(item, outcomes.CANNOT_UNDERSTAND, "attributes cannot be read")
        return Prepared(item, key, entry)

    def store_files(
        self,
        paths: Sequence[Path],
        expected_study_uid: str | None = None,
        institution_pk: int | None = None,
    ) -> list[StoreOutcome]:
        """Store spooled files (each consumed: stored or deleted); one outcome per file."""
        prepared = [self.prepare(path) for path in paths]
        return self.store_prepared(prepared, expected_study_uid, institution_pk)

    def store_prepared(
        self,
        prepared: Sequence[Prepared | StoreOutcome],
        expected_study_uid: str | None = None,
        institution_pk: int | None = None,
    ) -> list[StoreOutcome]:
        """Settle duplicates, make the blobs durable, commit the index; outcomes in order."""
        results: list[StoreOutcome | None] = [
            p if isinstance(p, StoreOutcome) else None for p in prepared
        ]
        work = [(n, p) for n, p in enumerate(prepared) if isinstance(p, Prepared)]
        try:
            work = self._within_reserve(work, results)
            if expected_study_uid:
                work = self._other_studies(work, expected_study_uid, results)
            owners, existing = self._read_places(work)
            work = self._owned_elsewhere(owners, work, institution_pk, results)
            work, replacing = self._settle_duplicates(existing, work, institution_pk, results)
            if work:
                self._write(work, replacing, results)
        finally:
            for _, item in work:  # whatever was not renamed into the store is removed
                item.parsed.path.unlink(missing_ok=True)
        return [r for r in results if r is not None]

    def _within_reserve(
        self, work: list[tuple[int, Prepared]], results: list[StoreOutcome | None]
    ) -> list[tuple[int, Prepared]]:
        """Spooled parts already use their space: below the reserve, none of them is kept."""
        if not work:
            return work
        try:
            self.check_free_space()
        except InsufficientStorage as refusal:
            log.warning("store refused: %s", refusal)
            for position, item in work:
                item.parsed.path.unlink(missing_ok=True)
                message = "storage below its reserve of free space"
                results[position] = _failed(item.parsed, outcomes.OUT_OF_RESOURCES, message)
            return []
        return work

    def _other_studies(
        self, work: list[tuple[int, Prepared]], study: str, results: list[StoreOutcome | None]
    ) -> list[tuple[int, Prepared]]:
        kept = []
        for position, item in work:
            if item.parsed.study_instance_uid == study:
                kept.append((position, item))
                continue
            item.parsed.path.unlink(missing_ok=True)
            results[position] = _failed(
                item.parsed,
                outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"StudyInstanceUID {item.parsed.study_instance_uid} differs from the "
                f"request's {study}",
            )
        return kept

    def _read_places(
        self, work: list[tuple[int, Prepared]]
    ) -> tuple[dict[str, int | None], dict[str, _Held]]:
        """The received studies' owners, and the instances held under the received UIDs."""
        if not work:
            return {}, {}
        values = {
            "instances": [item.parsed.sop_instance_uid for _, item in work],
            "studies": list({item.parsed.study_instance_uid for _, item in work}),
        }
        with self.engine.connect() as connection:
            rows = DriverCursor(connection).execute(_HELD_AND_OWNERS, values)
        owners = {row[2]: row[3] for row in rows if row[0] is None}
        return owners, {row[0]: _Held(*row[1:]) for row in rows if row[0] is not None}

    def _owned_elsewhere(
        self,
        owners: dict[str, int | None],
        work: list[tuple[int, Prepared]],
        institution_pk: int | None,
        results: list[StoreOutcome | None],
    ) -> list[tuple[int, Prepared]]:
        """New studies belong to the storing institution; another's study is not added to."""
        kept = []
        for position, item in work:
            item.entry.study["institution_pk"] = institution_pk
            owner = owners.get(item.parsed.study_instance_uid, institution_pk)
            if owner == institution_pk:
                kept.append((position, item))
                continue
            item.parsed.path.unlink(missing_ok=True)
            results[position] = _uid_in_use(item.parsed)
        return kept

    def _settle_duplicates(
        self,
        existing: dict[str, _Held],
        work: list[tuple[int, Prepared]],
        institution_pk: int | None,
        results: list[StoreOutcome | None],
    ) -> tuple[list[tuple[int, Prepared]], set[int]]:
        """Same UID, same bytes: success, nothing written. Other bytes: refused or replaced.

        Only the storing institution's own instance, in the same study, is ever replaced; a
        UID held anywhere else is refused as `_uid_in_use`, naming no owner.
        """
        kept: list[tuple[int, Prepared]] = []
        replacing: set[int] = set()
        seen: set[str] = set()
        for position, item in work:
            uid = item.parsed.sop_instance_uid
            problem = None
            held = existing.get(uid)
            if uid in seen:
                problem = "sent twice in one request"
            elif held is not None and not held.same_place(item, institution_pk):
                results[position] = _uid_in_use(item.parsed)
            elif held is not None and self._same_bytes(item.parsed.path, held.blob_key):
                results[position] = _stored(item.parsed)
            elif held is not None and not self.replace_duplicates:
                problem = _DIFFERENT_CONTENT
            else:
                kept.append((position, item))
                if held is not None:
                    replacing.add(position)
            seen.add(uid)
            if problem:
                results[position] = _failed(item.parsed, outcomes.DUPLICATE_SOP_INSTANCE, problem)
            if results[position] is not None:
                item.parsed.path.unlink(missing_ok=True)
        return kept, replacing

    def _same_bytes(self, path: Path, key: str) -> bool:
        try:
            with self.blobs.open(key) as stored:
                stored_path = Path(stored.name)
            return filecmp.cmp(path, stored_path, shallow=False)
        except OSError:
            return False

    def _write(
        self,
        work: list[tuple[int, Prepared]],
        replacing: set[int],
        results: list[StoreOutcome | None],
    ) -> None:
        moves = [(item.parsed.path, item.blob_key) for _, item in work]
        try:
            self.blobs.store(moves)
            old_keys, inserted = self._commit_owned(work, replacing, results)
        except Exception as error:  # disk full, database gone: nothing is indexed
            self.blobs.delete(key for _, key in moves)
            if is_disk_full(error):
                log.error("store failed, no space left: %s", error)
            else:
                log.exception("store failed")
            full = is_disk_full(error) or isinstance(error, OSError)
            reason = outcomes.OUT_OF_RESOURCES if full else outcomes.PROCESSING_FAILURE
            for position, item in work:
                results[position] = _failed(item.parsed, reason, "could not store")
            return
        self._discard(old_keys)
        for position, item in work:
            if results[position] is not None:  # refused inside the commit: owned elsewhere
                self.blobs.delete([item.blob_key])
            elif item.parsed.sop_instance_uid in inserted:
                results[position] = _stored(item.parsed)
            else:
                self.blobs.delete([item.blob_key])
                message = "stored concurrently by another request"
                results[position] = _failed(item.parsed, outcomes.DUPLICATE_SOP_INSTANCE, message)

    def _commit_owned(
        self,
        work: list[tuple[int, Prepared]],
        replacing: set[int],
        results: list[StoreOutcome | None],
    ) -> tuple[list[str], set[str]]:
        """Commit; instances whose study another institution created meanwhile are refused.

        The owner was checked before (`_owned_elsewhere`), outside this transaction: another
        process may have created the same new study for another institution since, and the
        index's upsert would then quietly add to it. The commit reads the owners again and,
        if one changed, is rolled back and made again without those instances.
        """
        while True:
            try:
                return self._commit(work, replacing)
            except _OwnedMeanwhile as taken:
                for position, item in work:
                    if item.parsed.study_instance_uid in taken.studies:
                        results[position] = _uid_in_use(item.parsed)
                work = [(n, item) for n, item in work if results[n] is None]

    def _commit(
        self, work: list[tuple[int, Prepared]], replacing: set[int]
    ) -> tuple[list[str], set[str]]:
        old_keys: list[str] = []
        if not work:
            return old_keys, set()
        with self._write_lock, self.engine.begin() as connection:
            fresh = [item.entry for position, item in work if position not in replacing]
            inserted = index.insert_entries(connection, fresh)
            for position, item in work:
                if position in replacing:
                    old = index.replace_entry(connection, item.entry)
                    inserted.add(item.parsed.sop_instance_uid)
                    if old:
                        old_keys.append(old)
            wanted = {item.parsed.study_instance_uid: item.entry.study["institution_pk"]
                      for _, item in work}  # fmt: skip
            owners = DriverCursor(connection).execute(_STUDY_OWNERS, {"uids": list(wanted)})
            taken = {uid for uid, owner in owners if owner != wanted[uid]}
            if taken:
                raise _OwnedMeanwhile(taken)  # rolls the whole batch back
        return old_keys, inserted

    # -- read ----------------------------------------------------------------------------

    def find_instances(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[StoredInstance]:
        statement = prepared(
            _instance_query(series is not None, instance is not None), self.engine.dialect
        )
        with dbapi_cursor(self.engine) as cursor:  # every retrieve: no per-execute layers
            rows = fetch_all(cursor, statement, _instance_params(study, series, instance))
        if not rows:
            raise _not_found(study, series, instance)
        return [StoredInstance(*row) for row in rows]

    def remember_crcs(self, crcs: Iterable[tuple[StoredInstance, int]]) -> None:
        """Keep the CRC-32 of blobs read whole, for the instances that still name them."""
        rows = [{"uid": stored.sop_instance_uid, "key": stored.blob_key, "crc": crc}
                for stored, crc in crcs]  # fmt: skip
        if not rows:
            return
        with self._write_lock, self.engine.begin() as connection:
            connection.execute(_REMEMBER_CRC, rows)

    def read_metadata(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[bytes]:
        """Each instance's stored DICOM JSON, with the `{base}` placeholder still in it."""
        statement = _instance_query(series is not None, instance is not None, metadata=True)
        with self.engine.connect() as connection:
            params = _instance_params(study, series, instance)
            documents = connection.execute(statement, params).scalars().all()
        if not documents:
            raise _not_found(study, series, instance)
        return list(documents)

    def read_study_access(self, study: str) -> StudyAccess | None:
        """Owner and grants of a study, for the policy decision; None when there is no study.

        On every guarded request: the study's row on the DB-API cursor, and its grants (whose
        times the ORM's types read) only for a study that has any."""
        with dbapi_cursor(self.engine) as cursor:
            rows = fetch_all(cursor, prepared(_STUDY_ACCESS, self.engine.dialect), {"study": study})
        if not rows:
            return None
        pk, institution_pk, patient_id, accession_number, granted = rows[0]
        grants: list[Any] = []
        if granted:
            with self.engine.connect() as connection:
                grants = list(connection.execute(_STUDY_GRANTS, {"study_pk": pk}).all())
        return StudyAccess(
            study,
            institution_pk,
            tuple((g[0], g[1], g[2], g[3]) for g in grants),
            patient_id,
            accession_number,
        )

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
        """The one path for removal: index rows, then blobs, their frame layouts and the files
        derived from them (thumbnails); emptied
        series, studies (with their grants) and patients go too.

        Readers that found the study before it went fail cleanly: a blob opened already is
        read to its end (the file lives until closed); one opened after answers not found.
        """
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
            # A study's grants go with it, in this transaction: erasure is not blocked by them.
            connection.execute(delete(StudyGrant).where(StudyGrant.study_pk.in_(empty_studies)))
            connection.execute(delete(Study).where(Study.pk.in_(empty_studies)))
            empty_patients = select(Patient.pk).where(
                ~select(Study.pk).where(Study.patient_pk == Patient.pk).exists()
            )
            connection.execute(delete(Patient).where(Patient.pk.in_(empty_patients)))
        self._discard([s.blob_key for s in stored])
        return len(stored)

    def _discard(self, keys: list[str]) -> None:
        """Blobs no instance names any more (deleted or replaced), with their frame layouts
        and the files derived from them: no picture of a patient stays behind in a cache."""
        self.blobs.delete(keys)
        if self.frame_cache_dir is not None:
            forget_layouts(self.frame_cache_dir, keys)
        for root in self.derived_dirs:
            forget_derived(root, keys)

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


class _OwnedMeanwhile(Exception):
    """Studies another institution created between the owner check and the commit."""

    def __init__(self, studies: set[str]) -> None:
        super().__init__(f"{len(studies)} studies owned elsewhere meanwhile")
        self.studies = studies


def _uid_in_use(item: ParsedInstance) -> StoreOutcome:
    """Another institution's study or instance holds a UID of this one.

    One answer for both, naming no owner: a sender learns only that the UID is taken (which
    a unique UID cannot hide), not whose it is nor whether it is a study or an instance.
    """
    refused = _failed(item, outcomes.PROCESSING_FAILURE, _UID_IN_USE)
    return replace(refused, conflict=True)


def _not_found(study: str, series: str | None, instance: str | None) -> Exception:
    if instance is not None:
        return InstanceNotFound(f"instance {instance} not found")
    if series is not None:
        return SeriesNotFound(f"series {series} not found in study {study}")
    return StudyNotFound(f"study {study} not found")
