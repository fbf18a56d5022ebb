"""Cached frame layouts: a JSON sidecar per blob on disk, a small LRU in memory in front of it.

A blob key names bytes that never change (a replaced instance gets a new key), so a layout
never goes stale and needs no invalidation. Sidecars are written to a temporary name and
renamed, so processes sharing the folder read either nothing or a whole file; a sidecar that
cannot be read is recomputed. The memory LRU is bounded by the number of frames it holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from archive._inflated import InflatedFile
from archive.blobstore import BlobStore
from archive.frames import FrameLocation, PixelDataLayout, locate_frames, native_frames
from archive.pixel_module import PixelModule
from foundation.weighted_lru import WeightedLRU

log = logging.getLogger(__name__)

# 2: notes on leniently read values; frames of deflated instances
# 3: the one Image Pixel module (archive.pixel_module): values taken as defaults are named
LAYOUT_VERSION = 3
MAX_FRAMES_IN_MEMORY = 100_000


class LayoutMemory(WeightedLRU[tuple[str, str], PixelDataLayout]):
    """Least recently used layouts, weighed by their frame count."""

    def __init__(self, max_frames: int) -> None:
        super().__init__(max_frames, lambda layout: len(layout.frames))


_MEMORY = LayoutMemory(MAX_FRAMES_IN_MEMORY)


def read_layout(
    blobs: BlobStore, key: str, cache_dir: Path | None, memory: LayoutMemory = _MEMORY
) -> PixelDataLayout:
    """The layout of the blob's pixel data: from memory, the sidecar, or the file itself."""
    memory_key = (str(cache_dir), key)
    layout = memory.get(memory_key)
    if layout is not None:
        return layout
    sidecar = _sidecar(cache_dir, key) if cache_dir is not None else None
    layout = _load(sidecar) if sidecar is not None else None
    if layout is None:
        with blobs.open(key) as handle:
            layout = locate_frames(handle)
        if sidecar is not None:
            _save(sidecar, layout)
    memory.put(memory_key, layout)
    return layout


def forget_layouts(cache_dir: Path, keys: Iterable[str]) -> None:
    """Remove the sidecars of deleted blobs (their keys are never reused)."""
    for key in keys:
        try:
            _sidecar(cache_dir, key).unlink(missing_ok=True)
        except OSError as error:
            log.warning("frame layout of %s not removed: %s", key, error)


def _sidecar(cache_dir: Path, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.json"


def _load(path: Path) -> PixelDataLayout | None:
    try:
        document = orjson.loads(path.read_bytes())
        if document.get("version") != LAYOUT_VERSION:
            return None
        return _from_json(document)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("frame layout %s unreadable, recomputing: %s", path, error)
        return None


def _save(path: Path, layout: PixelDataLayout) -> None:
    """Best effort: a cache that cannot be written only costs the next request a parse."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".layout-")
        with os.fdopen(fd, "wb") as target:
            target.write(orjson.dumps(_to_json(layout)))
        os.replace(name, path)
    except OSError as error:
        log.warning("frame layout %s not cached: %s", path, error)


def _to_json(layout: PixelDataLayout) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": LAYOUT_VERSION,
        "transfer_syntax_uid": layout.transfer_syntax_uid,
        "encapsulated": layout.encapsulated,
        "video": layout.video,
        "pixel": asdict(layout.pixel),
        "value": [layout.value_offset, layout.value_length],
        "inflated_from": layout.inflated_from,
    }
    if layout.encapsulated:  # native frames follow from the description, so are not kept
        document["frames"] = [[n for piece in f.ranges for n in piece] for f in layout.frames]
    return document


def _from_json(document: dict[str, Any]) -> PixelDataLayout:
    described = document["pixel"]
    tuples = {name: tuple(described[name]) for name in ("notes", "defaulted")}
    pixel = PixelModule(**(described | tuples))
    offset, length = document["value"]
    if document["encapsulated"]:
        frames = tuple(
            FrameLocation(tuple(zip(flat[::2], flat[1::2], strict=True)))
            for flat in document["frames"]
        )
    else:
        frames = native_frames(pixel, offset, length)
    return PixelDataLayout(
        str(document["transfer_syntax_uid"]),
        bool(document["encapsulated"]),
        bool(document["video"]),
        pixel,
        int(offset),
        int(length),
        frames,
        int(document.get("inflated_from", 0)),
    )


@contextmanager
def open_pixel_data(blobs: BlobStore, key: str, layout: PixelDataLayout) -> Iterator[BinaryIO]:
    """The stored file, to read frames from at the layout's offsets (a deflated one inflated)."""
    with blobs.open(key) as handle:
        if layout.inflated_from:
            yield cast(BinaryIO, InflatedFile(handle, layout.inflated_from))
        else:
            yield handle
