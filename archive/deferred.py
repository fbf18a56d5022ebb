"""Stores acknowledged once their blob is durable, indexed moments later in batches.

`DeferredIndex.store` does everything that decides an instance's outcome at once: the parse,
the structure walk and SOP class check, DICOM JSON and index rows, the reserve of free space,
the study's owner and the SOP Instance UID's holder (in the index, and among the instances this
process has accepted but not indexed yet), same-UID duplicates. Then it renames the blob to its
key, gives it a second name in this process's journal (a hard link under
`<blobs>/.journal/<process>/`), flushes both with one filesystem commit and returns: the sender
hears success with the bytes durable and the decision taken. A thread of the process commits
the index rows of whatever has arrived meanwhile in one transaction (one commit for many
instances, from every association), then drops their journal names.

A process killed in between leaves journal names; the next start (`replay`) indexes them
before the bridge listens, so nothing acknowledged is lost. Journals of processes still running
are locked (`flock`) and left alone.

Readers in this process that must see what was acknowledged (the end of an association, a
query, Storage Commitment) call `flush()` first. Another process sees an instance once its
batch has committed, normally within milliseconds. A study that another institution's process
created in that window is detected at commit (the owner is checked inside the transaction): the
instance is then not indexed, its blob is left for `ferry archive check`, and the conflict is
logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from archive import dicomjson, index, outcomes
from archive.blobstore import FilesystemBlobStore
from archive.outcomes import StoreOutcome
from archive.parse import InvalidInstance, read_received
from archive.store import _STUDY_OWNERS, Archive, Prepared, _failed, _stored
from foundation.errors import is_disk_full

log = logging.getLogger(__name__)

JOURNAL_FOLDER = ".journal"
_SUFFIX = ".entry"
_LOCK = "lock"
_BATCH = 200  # instances per index transaction, at most
_RETRY_S = 1.0  # after a failed commit (database gone): the items stay journalled
_FLUSH_TIMEOUT_S = 60.0
_LINGER_S = 0.2  # how long the indexer waits for more instances before a commit


@dataclass
class _Pending:
    item: Prepared
    institution_pk: int | None
    replacing: bool
    link: Path


class _OwnedElsewhere(Exception):
    def __init__(self, studies: set[str]) -> None:
        super().__init__(f"studies owned by another institution: {sorted(studies)}")
        self.studies = studies


def _entry_name(institution_pk: int | None, replacing: bool, key: str) -> str:
    owner = "-" if institution_pk is None else str(institution_pk)
    return f"{owner}.{int(replacing)}.{key.replace('/', '~')}{_SUFFIX}"


def _parse_entry(name: str) -> tuple[int | None, bool, str]:
    owner, replacing, key = name[: -len(_SUFFIX)].split(".", 2)
    return (None if owner == "-" else int(owner)), replacing == "1", key.replace("~", "/")


class DeferredIndex:
    """One per process: its journal folder, what it has accepted and not indexed, its indexer."""

    def __init__(self, archive: Archive, linger: float = _LINGER_S) -> None:
        assert isinstance(archive.blobs, FilesystemBlobStore)
        self.archive = archive
        self.blobs: FilesystemBlobStore = archive.blobs
        self.root = self.blobs.root / JOURNAL_FOLDER
        self.folder = self.root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_file: int | None = None
        self._condition = threading.Condition()
        self._queue: list[_Pending] = []
        self._in_flight = 0
        # Accepted and not indexed yet: each study's owner and how many, the SOP Instance UIDs.
        self._studies: dict[str, int | None] = {}
        self._study_refs: Counter[str] = Counter()
        self._written: Counter[str] = Counter()  # studies with a journalled (checked) instance
        self._sop_uids: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._flushing = 0  # readers waiting in flush()
        self.linger = linger

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Replay what dead processes left, then open this process's journal and indexer."""
        self.replay()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(self.folder / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ferry-indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Index what is pending, then stop; the journal folder goes when it is empty."""
        self.flush()
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=_FLUSH_TIMEOUT_S)
            self._thread = None
        if self._lock_file is not None:
            if not any(self._entries(self.folder)):
                (self.folder / _LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            os.close(self._lock_file)
            self._lock_file = None

    # -- store -------------------------------------------------------------------------------

    def store(
        self,
        path: Path,
        institution_pk: int | None,
        expected_study_uid: str | None = None,
    ) -> StoreOutcome:
        """The outcome the sender hears; on success the blob and its journal name are durable."""
        prepared = self.archive.prepare(path)
        if isinstance(prepared, StoreOutcome):
            return prepared
        parsed = prepared.parsed
        study, uid = parsed.study_instance_uid, parsed.sop_instance_uid
        claimed = self._claim(study, uid, institution_pk)
        while claimed is None:
            # Settled against the index, once the pending ones are there.
            if not self.flush() or not self._queue:
                time.sleep(0.005)  # another association is storing it right now
            claimed = self._claim(study, uid, institution_pk)
        work: list[tuple[int, Prepared]] = [(0, prepared)]
        results: list[StoreOutcome | None] = [None]
        archive = self.archive
        queued = False
        try:
            work = archive._within_reserve(work, results)
            if expected_study_uid:
                work = archive._other_studies(work, expected_study_uid, results)
            if claimed:  # pending here for this institution: its owner is checked at commit
                prepared.entry.study["institution_pk"] = institution_pk
            else:
                work = archive._owned_elsewhere(work, institution_pk, results)
            work, replacing = archive._settle_duplicates(work, institution_pk, results)
            if work:
                written = self._write(prepared, institution_pk, bool(replacing))
                results[0] = written
                queued = written.stored
                work = []
        finally:
            for _, item in work:
                item.parsed.path.unlink(missing_ok=True)
            if not queued:
                with self._condition:
                    self._release(parsed.study_instance_uid, parsed.sop_instance_uid)
        outcome = results[0]
        assert outcome is not None
        return outcome

    def _claim(self, study: str, uid: str, institution_pk: int | None) -> bool | None:
        """Mark the instance as accepted here: True when an instance of its study was
        acknowledged here for the same institution and is not indexed yet (its owner was checked
        then, and is checked again at commit), False when not; None when a pending one must be
        indexed first (the same SOP Instance UID, or the same study for another institution)."""
        with self._condition:
            pending = self._written[study] > 0
            if uid in self._sop_uids or self._studies.get(study, institution_pk) != institution_pk:
                return None
            self._studies[study] = institution_pk
            self._study_refs[study] += 1
            self._sop_uids.add(uid)
            return pending

    def _release(self, study: str, uid: str) -> None:
        self._sop_uids.discard(uid)
        self._study_refs[study] -= 1
        if self._study_refs[study] <= 0:
            del self._study_refs[study]
            self._studies.pop(study, None)

    def _write(self, item: Prepared, institution_pk: int | None, replacing: bool) -> StoreOutcome:
        link = self.folder / _entry_name(institution_pk, replacing, item.blob_key)
        try:
            self.blobs.store([(item.parsed.path, item.blob_key)], {item.blob_key: link})
        except Exception as error:  # disk full: nothing is acknowledged, nothing kept
            log.exception("store failed")
            link.unlink(missing_ok=True)
            self.blobs.delete([item.blob_key])
            full = is_disk_full(error) or isinstance(error, OSError)
            reason = outcomes.OUT_OF_RESOURCES if full else outcomes.PROCESSING_FAILURE
            return _failed(item.parsed, reason, "could not store")
        with self._condition:
            self._queue.append(_Pending(item, institution_pk, replacing, link))
            self._written[item.parsed.study_instance_uid] += 1
            self._condition.notify_all()
        return _stored(item.parsed)

    def flush(self, timeout: float = _FLUSH_TIMEOUT_S) -> bool:
        """Wait until everything this process accepted is indexed; False if it was not in time."""
        deadline = time.monotonic() + timeout
        with self._condition:
            if not (self._queue or self._in_flight):
                return True
            self._flushing += 1
            self._condition.notify_all()
            try:
                while self._queue or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None:
                        return False
                    self._condition.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    # -- indexer -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return
                # Linger for more (one commit for many), unless someone waits to read them.
                deadline = time.monotonic() + self.linger
                while (
                    len(self._queue) < _BATCH
                    and not self._flushing
                    and not self._stopping
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._condition.wait(remaining)
                batch = self._queue[:_BATCH]
                del self._queue[:_BATCH]
                self._in_flight = len(batch)
            try:
                self._index(batch)
            except Exception:
                log.exception("indexing %d acknowledged instances failed; retrying", len(batch))
                with self._condition:
                    self._queue[:0] = batch
                    self._in_flight = 0
                    self._condition.wait(_RETRY_S)
                continue
            with self._condition:
                self._forget(batch)
                self._in_flight = 0
                self._condition.notify_all()

    def _forget(self, batch: list[_Pending]) -> None:
        for pending in batch:
            study = pending.item.parsed.study_instance_uid
            self._written[study] -= 1
            if self._written[study] <= 0:
                del self._written[study]
            self._release(
                pending.item.parsed.study_instance_uid, pending.item.parsed.sop_instance_uid
            )

    def _index(self, batch: list[_Pending]) -> None:
        """Commit the batch's rows, the owner of each study checked inside the transaction."""
        refused: set[str] = set()
        while True:
            work = [p for p in batch if p.item.parsed.study_instance_uid not in refused]
            try:
                old_keys, inserted = self._commit(work)
                break
            except _OwnedElsewhere as conflict:
                refused |= conflict.studies
        for pending in batch:
            parsed = pending.item.parsed
            if parsed.study_instance_uid in refused:
                log.error(
                    "acknowledged instance %s not indexed: study %s was created meanwhile by "
                    "another institution; its blob %s is left for `ferry archive check`",
                    parsed.sop_instance_uid,
                    parsed.study_instance_uid,
                    pending.item.blob_key,
                )
            elif parsed.sop_instance_uid not in inserted:
                log.error(
                    "acknowledged instance %s not indexed: stored meanwhile by another request",
                    parsed.sop_instance_uid,
                )
                self.blobs.delete([pending.item.blob_key])
        self.blobs.delete(old_keys)
        for pending in batch:
            pending.link.unlink(missing_ok=True)

    def _commit(self, work: list[_Pending]) -> tuple[list[str], set[str]]:
        old_keys: list[str] = []
        if not work:
            return old_keys, set()
        owners = {p.item.parsed.study_instance_uid: p.institution_pk for p in work}
        for pending in work:
            pending.item.entry.study["institution_pk"] = pending.institution_pk
        with self.archive._write_lock, self.archive.engine.begin() as connection:
            fresh = [p.item.entry for p in work if not p.replacing]
            inserted = index.insert_entries(connection, fresh)
            for pending in work:
                if pending.replacing:
                    old = index.replace_entry(connection, pending.item.entry)
                    inserted.add(pending.item.parsed.sop_instance_uid)
                    if old:
                        old_keys.append(old)
            # The rows are written (SQLite's write lock, PostgreSQL's row locks are held): a
            # study another institution created since the checks shows here, before commit.
            found = dict(connection.execute(_STUDY_OWNERS, {"uids": list(owners)}).all())
            elsewhere = {study for study, owner in found.items() if owners[study] != owner}
            if elsewhere:
                raise _OwnedElsewhere(elsewhere)
        return old_keys, inserted

    # -- replay ------------------------------------------------------------------------------

    @staticmethod
    def _entries(folder: Path) -> Iterator[Path]:
        with contextlib.suppress(FileNotFoundError):
            for path in folder.iterdir():
                if path.name.endswith(_SUFFIX):
                    yield path

    def replay(self) -> int:
        """Index the journal entries of processes that are gone; returns how many were indexed."""
        indexed = 0
        if not self.root.exists():
            return 0
        for folder in sorted(self.root.iterdir()):
            if folder == self.folder or not folder.is_dir():
                continue
            lock = os.open(folder / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                indexed += self._replay_folder(folder)
                (folder / _LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
            finally:
                os.close(lock)
        return indexed

    def _replay_folder(self, folder: Path) -> int:
        batch: list[_Pending] = []
        for link in sorted(self._entries(folder)):
            institution_pk, replacing, key = _parse_entry(link.name)
            pending = self._reread(link, institution_pk, replacing, key)
            if pending is None:
                link.unlink(missing_ok=True)
            else:
                batch.append(pending)
        for start in range(0, len(batch), _BATCH):
            self._index(batch[start : start + _BATCH])
        if batch:
            log.info("replayed %d acknowledged instances from %s", len(batch), folder.name)
        return len(batch)

    def _reread(
        self, link: Path, institution_pk: int | None, replacing: bool, key: str
    ) -> _Pending | None:
        """The journalled blob parsed again, unless its row is there already."""
        with self.archive.engine.connect() as connection:
            held = connection.execute(
                select(index.INSTANCE.c.pk).where(index.INSTANCE.c.blob_key == key)
            ).first()
        if held is not None:
            return None
        try:
            parsed = read_received(link)
            document = dicomjson.instance_json(
                parsed.dataset,
                parsed.study_instance_uid,
                parsed.series_instance_uid,
                parsed.sop_instance_uid,
                parsed.pixel_vr,
            )
            entry = index.index_entry(parsed, document, key)
        except (InvalidInstance, Exception) as error:
            log.error("journal entry %s cannot be indexed again: %s", link.name, error)
            return None
        return _Pending(Prepared(parsed, key, entry), institution_pk, replacing, link)


def journalled_keys(blobs: FilesystemBlobStore) -> set[str]:
    """Blob keys named in any journal: acknowledged, to be indexed at the next start."""
    keys = set()
    root = blobs.root / JOURNAL_FOLDER
    if root.exists():
        for folder in root.iterdir():
            for link in DeferredIndex._entries(folder):
                keys.add(_parse_entry(link.name)[2])
    return keys
