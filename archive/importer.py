"""Import of files, folders, DICOMDIR file-sets (PS3.10 8, PS3.3 F) and zip files into the archive.

Files found are copied into the blob store's spool folder and handed to `Archive.store_files`
in batches, so an import stores exactly as STOW-RS does: same checks, same duplicate rules.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TextIO

from pydicom import dcmread
from sqlalchemy import select
from sqlmodel import col

from archive import outcomes
from archive.models import Instance
from archive.outcomes import StoreOutcome
from archive.store import Archive

_HEAD_SIZE = 132  # preamble and "DICM" (PS3.10 7.1)
_CHUNK_SIZE = 1024 * 1024
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_UNREADABLE = (OSError, EOFError, zlib.error, zipfile.BadZipFile)
_ZIP_SIGNATURE = b"PK\x03\x04"
NOT_DICOM = "not DICOM: no 'DICM' at byte 128 and no data set at byte 0"
LINK_OUT = "symbolic link out of the imported folder: import its target by name"


@dataclass
class ImportSummary:
    """What an import did; files are named wherever something was not stored."""

    stored: int = 0
    already_stored: int = 0  # same SOP Instance UID and same bytes: nothing written
    replaced: int = 0  # different bytes, and the archive replaces duplicates
    duplicates_refused: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dicomdirs: int = 0

    def describe(self) -> str:
        lines = [
            f"stored: {self.stored}",
            f"already stored (identical): {self.already_stored}",
            *([f"replaced (different content): {self.replaced}"] if self.replaced else []),
            f"refused duplicates (different content): {len(self.duplicates_refused)}",
            f"rejected: {len(self.rejected)}",
            f"skipped: {len(self.skipped)}",
            *(
                [f"DICOMDIR indexes read (not instances): {self.dicomdirs}"]
                if self.dicomdirs
                else []
            ),
        ]
        for title, items in (
            ("rejected", self.rejected),
            ("refused duplicate", self.duplicates_refused),
            ("skipped", self.skipped),
        ):
            lines += [f"{title}: {label}: {reason}" for label, reason in items]
        return "\n".join(lines)


def import_paths(
    archive: Archive,
    paths: Iterable[Path],
    *,
    progress: bool = True,
    batch_size: int = 50,
    institution_pk: int | None = None,
) -> ImportSummary:
    """Import every DICOM file under `paths`; what is not stored is named in the summary.

    A file is DICOM when it has "DICM" at byte 128 (PS3.10 7.1), or when it starts like a bare
    data set, as old senders write: its first tag is in group 0002, or in group 0008 no later
    than SOP Class UID (0008,0016), which every IOD has and elements come in ascending order
    (read little endian, or big endian for the retired Explicit VR Big Endian).
    Anything else (README.txt, a JPEG) is skipped, not rejected; a file that passes this test
    but cannot be stored is rejected with the archive's reason. A zip file (zipfile.is_zipfile)
    is read member by member, a DICOMDIR stands for the files it references. Folders are walked
    in name order; each file is imported once however often it is reached. Symbolic links that
    stay inside the folder lead to files the walk reaches anyway; links out of it are skipped,
    so no link makes the walk loop or leave the folder it was given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    summary = ImportSummary()
    files = list(_Walk(summary).iter_files(Path(p) for p in paths))
    bar = _Progress(progress and sys.stderr.isatty(), len(files), sys.stderr)
    importer = _Importer(archive, summary, batch_size, bar, institution_pk)
    try:
        for path in files:
            importer.import_file(path)
        importer.flush()
    finally:
        importer.discard_spooled()  # an exception or ^C must not leave copies in the spool
        bar.close()
    return summary


class _Walk:
    """Files to import, in name order, each once; a DICOMDIR yields the files it references."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary
        self.seen: set[tuple[int, int]] = set()

    def iter_files(self, paths: Iterable[Path]) -> Iterator[Path]:
        for path in paths:
            if path.is_dir():
                yield from self._iter_tree(path)
            else:
                yield from self._iter_file(path)

    def _first_visit(self, info: os.stat_result) -> bool:
        """Hard links, links inside the tree and DICOMDIR references reach one file many ways."""
        key = (info.st_dev, info.st_ino)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def _iter_tree(self, root: Path) -> Iterator[Path]:
        inside = root.resolve()
        stack = [self._entries(root)] if self._first_visit(root.stat()) else []
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(inside):
                    self.summary.skipped.append((str(path), LINK_OUT))
                elif not target.exists():
                    self.summary.skipped.append((str(path), "broken symbolic link"))
                elif not target.is_dir():  # a linked folder inside the tree is walked anyway
                    yield from self._iter_file(path)
            elif entry.is_dir(follow_symlinks=False):
                if self._first_visit(entry.stat(follow_symlinks=False)):  # bind-mount loops
                    stack.append(self._entries(path))
            else:
                yield from self._iter_file(path)

    def _entries(self, folder: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as scan:
                return iter(sorted(scan, key=lambda entry: entry.name))
        except OSError as error:
            self.summary.rejected.append((str(folder), f"cannot read folder: {error.strerror}"))
            return iter(())

    def _iter_file(self, path: Path) -> Iterator[Path]:
        try:
            info = path.stat()
        except OSError as error:
            self.summary.rejected.append((str(path), f"cannot read: {error.strerror}"))
            return
        if not self._first_visit(info):
            return
        if not stat.S_ISREG(info.st_mode):  # never open a FIFO or a device
            self.summary.skipped.append((str(path), "not a regular file"))
        elif path.name.upper() == "DICOMDIR":
            yield from self._iter_dicomdir(path)
        else:
            yield path

    def _iter_dicomdir(self, path: Path) -> Iterator[Path]:
        try:
            file_ids = _read_file_ids(path)
        except Exception as error:  # pydicom raises many types on damaged files
            self.summary.rejected.append((str(path), f"unreadable DICOMDIR: {error}"))
            return
        self.summary.dicomdirs += 1
        listings: dict[Path, dict[str, str]] = {}
        for parts in file_ids:
            if any(part in ("", ".", "..") or "/" in part or "\\" in part for part in parts):
                name = "\\".join(parts)
                self.summary.rejected.append((str(path), f"File ID {name!r} leaves its folder"))
                continue
            referenced = _locate(path.parent, parts, listings)
            if referenced.exists():
                yield from self._iter_file(referenced)
            else:
                self.summary.rejected.append((str(referenced), f"named in {path} but missing"))


def _read_file_ids(path: Path) -> list[list[str]]:
    """Referenced File IDs of the directory records, as path components (PS3.3 F.3.2.2)."""
    dicomdir = dcmread(path, force=True)
    file_ids = []
    for record in dicomdir.get("DirectoryRecordSequence", []):
        value = record.get("ReferencedFileID")
        if value:
            file_ids.append([value] if isinstance(value, str) else [str(part) for part in value])
    return file_ids


def _locate(folder: Path, parts: list[str], listings: dict[Path, dict[str, str]]) -> Path:
    """File IDs are upper case (PS3.10 8.5), but mounted media often show them in lower case."""
    exact = folder.joinpath(*parts)
    if exact.exists():
        return exact
    found = folder
    for part in parts:
        if found not in listings:
            try:
                listings[found] = {name.upper(): name for name in os.listdir(found)}
            except OSError:
                return exact
        name = listings[found].get(part.upper())
        if name is None:
            return exact
        found = found / name
    return found


def _is_part10(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _is_bare_data_set(head: bytes) -> bool:
    if len(head) < 8:
        return False
    group: int
    element: int
    group, element = struct.unpack("<HH", head[:4])
    big_group: int
    big_element: int
    big_group, big_element = struct.unpack(">HH", head[:4])  # Explicit VR Big Endian, retired
    return (
        group == 0x0002
        or (group == 0x0008 and element <= 0x0016)
        or (big_group == 0x0008 and big_element <= 0x0016)
    )


@dataclass(frozen=True)
class _Spooled:
    path: Path
    label: str
    sop_instance_uid: str | None


class _Importer:
    """Copies files into the spool folder and stores them a batch at a time."""

    def __init__(
        self,
        archive: Archive,
        summary: ImportSummary,
        batch_size: int,
        progress: _Progress,
        institution_pk: int | None = None,
    ) -> None:
        self.archive = archive
        self.institution_pk = institution_pk
        self.summary = summary
        self.batch_size = batch_size
        self.progress = progress
        self.batch: list[_Spooled] = []
        self.batch_uids: set[str] = set()
        self.spooled: set[Path] = set()  # every copy not yet handed over, for discard_spooled

    def import_file(self, path: Path) -> None:
        label = str(path)
        try:
            source = path.open("rb")
        except OSError as error:
            self._reject(label, error)
            self.progress.advance()
            return
        with source:
            try:
                head = source.read(_HEAD_SIZE)
                is_zip = not _is_part10(head) and zipfile.is_zipfile(source)
                source.seek(len(head))
            except OSError as error:
                self._reject(label, error)
                is_zip, item = False, None
            else:
                item = None if is_zip else self._spool(source, head, label)
            if is_zip:
                self._import_zip(source, label)  # counts its members itself
                return
        self._queue(item)
        self.progress.advance()

    def _import_zip(self, source: IO[bytes], label: str) -> None:
        try:
            bundle = zipfile.ZipFile(source)
        except _UNREADABLE as error:
            self.summary.rejected.append((label, f"unreadable zip file: {error}"))
            self.progress.advance()
            return
        with bundle:
            members = sorted(
                (member for member in bundle.infolist() if not member.is_dir()),
                key=lambda member: member.filename,
            )
            self.progress.add(len(members) - 1)  # the zip itself was counted as one file
            for member in members:
                self._queue(self._spool_member(bundle, member, f"{label}/{member.filename}"))
                self.progress.advance()

    def _spool_member(
        self, bundle: zipfile.ZipFile, member: zipfile.ZipInfo, label: str
    ) -> _Spooled | None:
        if PurePosixPath(member.filename).name.upper() == "DICOMDIR":
            self.summary.dicomdirs += 1  # the files it references are members too
            return None
        try:
            with bundle.open(member) as source:
                head = source.read(_HEAD_SIZE)
                if head.startswith(_ZIP_SIGNATURE):
                    self.summary.skipped.append((label, "zip file inside a zip file: extract it"))
                    return None
                return self._spool(source, head, label)
        except (RuntimeError, NotImplementedError, *_UNREADABLE) as error:  # encrypted, unknown
            self._reject(label, error)
            return None

    def _spool(self, source: IO[bytes], head: bytes, label: str) -> _Spooled | None:
        """Stream the file into the spool folder; never a whole file in memory."""
        if not (_is_part10(head) or _is_bare_data_set(head)):
            self.summary.skipped.append((label, NOT_DICOM))
            return None
        descriptor, name = tempfile.mkstemp(dir=self.archive.blobs.spool_dir, prefix=".import-")
        path = Path(name)
        self.spooled.add(path)
        try:
            with os.fdopen(descriptor, "wb") as target:
                target.write(head)
                shutil.copyfileobj(source, target, _CHUNK_SIZE)
        except _UNREADABLE as error:
            self._discard([path])
            self._reject(label, error)
            return None
        return _Spooled(path, label, _sop_instance_uid(path))

    def _reject(self, label: str, error: Exception) -> None:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            raise error  # every further file would fail the same way
        self.summary.rejected.append((label, f"cannot read: {error}"))

    def _queue(self, item: _Spooled | None) -> None:
        """A UID twice in one batch is refused by the store; the second copy waits a batch."""
        if item is None:
            return
        if len(self.batch) >= self.batch_size or item.sop_instance_uid in self.batch_uids:
            self.flush()
        self.batch.append(item)
        if item.sop_instance_uid:
            self.batch_uids.add(item.sop_instance_uid)

    def flush(self) -> None:
        batch, self.batch, self.batch_uids = self.batch, [], set()
        if not batch:
            return
        try:
            before = self._blob_keys([item.sop_instance_uid or "" for item in batch])
            results = self.archive.store_files(
                [item.path for item in batch], institution_pk=self.institution_pk
            )
        finally:
            self._discard([item.path for item in batch])
        after = self._blob_keys(list(before))
        for item, outcome in zip(batch, results, strict=True):
            self._tally(item, outcome, before, after)
        self.progress.count(sum(outcome.stored for outcome in results))

    def _tally(
        self, item: _Spooled, outcome: StoreOutcome, before: dict[str, str], after: dict[str, str]
    ) -> None:
        """A stored outcome for a UID indexed before the batch is a re-send or a replacement."""
        uid = outcome.sop_instance_uid
        if outcome.stored and uid not in before:
            self.summary.stored += 1
        elif outcome.stored:
            if after.get(uid) == before[uid]:
                self.summary.already_stored += 1
            else:
                self.summary.replaced += 1
        elif outcome.failure_reason == outcomes.DUPLICATE_SOP_INSTANCE:
            self.summary.duplicates_refused.append((item.label, outcome.message))
        else:
            reason = f"{outcome.message} (failure reason 0x{outcome.failure_reason:04X})"
            self.summary.rejected.append((item.label, reason))

    def _blob_keys(self, uids: list[str]) -> dict[str, str]:
        uids = [uid for uid in uids if uid]
        if not uids:
            return {}
        statement = select(col(Instance.sop_instance_uid), col(Instance.blob_key)).where(
            col(Instance.sop_instance_uid).in_(uids)
        )
        with self.archive.engine.connect() as connection:
            return {str(uid): str(key) for uid, key in connection.execute(statement).all()}

    def _discard(self, paths: Iterable[Path]) -> None:
        """The store consumes what it is given; whatever it did not is removed here."""
        for path in paths:
            path.unlink(missing_ok=True)
            self.spooled.discard(path)

    def discard_spooled(self) -> None:
        self.batch, self.batch_uids = [], set()
        self._discard(list(self.spooled))


def _sop_instance_uid(path: Path) -> str | None:
    """Read ahead of the store only to keep one UID out of a batch twice."""
    try:
        dataset = dcmread(
            path, stop_before_pixels=True, force=True, specific_tags=["SOPInstanceUID"]
        )
        return str(dataset.get("SOPInstanceUID", "") or "").strip() or None
    except Exception:  # the store will say what is wrong with the file
        return None


class _Progress:
    """One self-rewriting line on a terminal: files done of files found, instances per second."""

    def __init__(self, enabled: bool, total: int, stream: TextIO) -> None:
        self.enabled = enabled
        self.total = total
        self.stream = stream
        self.done = 0
        self.instances = 0
        self.started = time.monotonic()
        self.drawn = 0.0

    def add(self, files: int) -> None:
        self.total += files

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def count(self, instances: int) -> None:
        self.instances += instances
        self._draw()

    def _draw(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.drawn < 0.1):
            return
        self.drawn = now
        rate = self.instances / max(now - self.started, 1e-3)
        self.stream.write(f"\r{self.done}/{self.total} files  {rate:.1f} instances/s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(final=True)
            self.stream.write("\n")
            self.stream.flush()
