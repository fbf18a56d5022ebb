"""The thumbnail cache: rendered thumbnails on disk, bounded by size (PS3.18 10.4.3).

Entries live under `<data_dir>/cache/thumbnails/<2 hex>/<64 hex>/<digest>.<ext>`: one folder per
stored instance's blob (`archive.derived`), which `Archive.delete` removes with the blob, and a
digest naming the blob, the frames, the options and the Accept list, so a replaced instance is a
miss, never a stale hit. A write appears whole (temporary file, then rename), so
any number of processes may share the folder. After each write, when the folder holds more
than `max_bytes`, the files least recently used go (a hit refreshes a file's mtime) until it
holds 90 % of the cap: LRU by mtime, with no index to keep consistent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from archive.derived import derived_folder
from dicomweb.rendering import GIF, JPEG, PNG, Rendered

log = logging.getLogger(__name__)

THUMBNAIL_CACHE_BYTES = 256 * 1024 * 1024
_EXTENSIONS = {JPEG: ".jpg", PNG: ".png", GIF: ".gif"}
_MEDIA_TYPES = {extension: media for media, extension in _EXTENSIONS.items()}


def thumbnail_dir(data_dir: Path) -> Path:
    return data_dir / "cache" / "thumbnails"


class ThumbnailCache:
    def __init__(self, folder: Path, max_bytes: int = THUMBNAIL_CACHE_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path(self, blob_key: str, digest: str, media_type: str) -> Path:
        return derived_folder(self.folder, blob_key) / f"{digest}{_EXTENSIONS[media_type]}"

    def read(self, blob_key: str, digest: str) -> Rendered | None:
        for media_type in _EXTENSIONS:
            path = self.path(blob_key, digest, media_type)
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as error:  # unreadable: render again rather than fail the request
                log.warning("thumbnail cache: cannot read %s: %s", path, error)
                return None
            with contextlib.suppress(OSError):  # evicted meanwhile: the bytes are read already
                os.utime(path)
            return Rendered(content, media_type)
        return None

    def write(self, blob_key: str, digest: str, rendered: Rendered) -> None:
        """Keep an image; anything else (a document, a video) is not a thumbnail to keep, nor
        an image drawn with a caveat: the cache keeps bytes, and a hit would lose the `Warning`
        that must go with them (re-drawn each time instead; such instances are rare)."""
        if rendered.media_type not in _EXTENSIONS or rendered.warnings:
            return
        path = self.path(blob_key, digest, rendered.media_type)
        spool = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            spool.write_bytes(rendered.content)
            os.replace(spool, path)
            self.evict()
        except OSError as error:  # a full or read-only disk costs speed, not the answer
            log.warning("thumbnail cache: cannot keep %s: %s", path, error)
            spool.unlink(missing_ok=True)

    def evict(self) -> None:
        entries = []
        for path in self.folder.glob("*/*/*"):
            if path.suffix not in _MEDIA_TYPES:
                continue
            with contextlib.suppress(FileNotFoundError):
                status = path.stat()
                entries.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(entries):
            if total <= self.max_bytes * 0.9:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
