"""Blob store: Part 10 files kept byte for byte, made durable before the index knows them."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import io
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

CHUNK_SIZE = 1024 * 1024
_PROBE_SIZE = 64 * 1024
_SYNCFS_BATCH = 8  # from this many files on, one syncfs beats one fsync each


class BlobStore(Protocol):
    """The seam between the archive and where bytes live (local disk now, object storage later)."""

    spool_dir: Path

    def new_key(self, study_uid: str, sop_uid: str) -> str: ...
    def store(self, moves: Iterable[tuple[Path, str]]) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def open_unbuffered(self, key: str) -> BinaryIO:
        """For a file whose bytes go from its descriptor (`os.sendfile`) or in large reads."""
        ...

    def size(self, key: str) -> int: ...
    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def iter_keys(self) -> Iterator[str]: ...
    def check(self) -> None: ...
    def free_bytes(self) -> int: ...


@functools.cache
def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's `syncfs`, looked up once a process (`find_library` runs `ldconfig -p`)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return getattr(libc, "syncfs", None)


class FilesystemBlobStore:
    """Blobs under one folder; incoming files are spooled inside it so storing is a rename."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self._resolved_root = str(root.resolve())
        self.spool_dir = root / ".incoming"
        self.fsync = fsync
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._syncfs = _load_syncfs()

    def new_key(self, study_uid: str, sop_uid: str) -> str:
        """UIDs are validated before they get here; the token keeps a replaced blob's name new."""
        fan = hashlib.sha1(study_uid.encode(), usedforsecurity=False).hexdigest()[:2]
        return f"{fan}/{study_uid}/{sop_uid}.{secrets.token_hex(4)}.dcm"

    def _name(self, key: str) -> str:
        """The file of `key`, which must name a path below the root (checked on the name alone:
        a retrieve opens hundreds of blobs, and resolving each on disk took 14 `lstat`s; as a
        string, since building a `Path` cost as much as opening the file)."""
        if not key or "\0" in key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"blob key {key!r} escapes the store")
        return f"{self._resolved_root}/{key}"

    def _path(self, key: str) -> Path:
        return Path(self._name(key))

    def _make_durable(self, paths: list[Path]) -> None:
        if not self.fsync or not paths:
            return
        if self._syncfs is not None and len(paths) >= _SYNCFS_BATCH:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if self._syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync_dirs(self, folders: set[Path]) -> None:
        if not self.fsync:
            return
        for folder in folders:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def store(self, moves: Iterable[tuple[Path, str]]) -> None:
        """Rename each spooled file to its key, then flush the files and the folders that changed.

        Renamed first, flushed after: on a journalling filesystem (ext4) the files' flush then
        commits the renames with them, and the folders' flush finds nothing left to write: one
        journal commit per store instead of two. Until the index row is committed, a blob that a
        crash leaves unflushed is an orphan (`ferry archive check`), never a row's target.
        """
        folders: set[Path] = set()
        targets = []
        for source, key in moves:
            target = self._path(key)
            if target.parent not in folders and not target.parent.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                folders.add(target.parent.parent)
            os.replace(source, target)
            folders.add(target.parent)
            targets.append(target)
        self._make_durable(targets)
        self._sync_dirs(folders)

    def open(self, key: str) -> BinaryIO:
        return open(self._name(key), "rb")

    def open_unbuffered(self, key: str) -> BinaryIO:
        return io.FileIO(self._name(key), "r")

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def iter_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as handle:
            handle.seek(start)
            remaining = (end - start) if end is not None else None
            while remaining is None or remaining > 0:
                want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = handle.read(want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other instances of the study
                path.parent.rmdir()

    def iter_keys(self) -> Iterator[str]:
        for path in self.root.rglob("*.dcm"):
            if self.spool_dir not in path.parents:
                yield path.relative_to(self.root).as_posix()

    def iter_spooled(self) -> Iterator[Path]:
        yield from self.spool_dir.iterdir()

    def free_bytes(self) -> int:
        """Space an unprivileged writer may still use on the store's filesystem."""
        return shutil.disk_usage(self.root).free

    def check(self) -> None:
        """Readiness: the folder exists and takes a small write (a full disk does not)."""
        probe = self.spool_dir / f".ready-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(bytes(_PROBE_SIZE))
        finally:
            probe.unlink(missing_ok=True)


OPEN_AHEAD_FILES = 32  # blobs opened and read ahead together for sending from their files
OPEN_AHEAD_BYTES = 16 * 1024 * 1024
_Item = TypeVar("_Item")


def ahead_batches(items: Iterable[_Item], size: Callable[[_Item], int]) -> Iterator[list[_Item]]:
    """`items` in order, a few at a time: as many as `open_ahead` should open and read ahead
    together (up to OPEN_AHEAD_FILES blobs or OPEN_AHEAD_BYTES)."""
    batch: list[_Item] = []
    total = 0
    for item in items:
        batch.append(item)
        total += size(item)
        if len(batch) >= OPEN_AHEAD_FILES or total >= OPEN_AHEAD_BYTES:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def open_ahead(blobs: BlobStore, keys: Iterable[str]) -> list[BinaryIO | OSError]:
    """The blobs' open files, the kernel asked to read each ahead (`POSIX_FADV_WILLNEED`), for
    sending them from their descriptors soon after; a blob that cannot be opened is its error.
    Blocks on the disk: run it in a worker thread."""
    files: list[BinaryIO | OSError] = []
    try:
        for key in keys:
            try:
                file = blobs.open_unbuffered(key)
            except OSError as error:
                files.append(error)
                continue
            files.append(file)
            read_ahead(file)
    except BaseException:
        close_all(files)
        raise
    return files


def read_ahead(file: BinaryIO, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to read `length` bytes of `file` from `offset` (0: to its end) into the
    page cache now (`POSIX_FADV_WILLNEED`), for sending them from the descriptor soon after; a
    file that cannot take the hint is read when sent."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.posix_fadvise(file.fileno(), offset, length, os.POSIX_FADV_WILLNEED)


def close_all(files: Iterable[BinaryIO | OSError]) -> None:
    for file in files:
        if not isinstance(file, OSError):
            file.close()
