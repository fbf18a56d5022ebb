"""The viewing study: CT slices, a JPEG 2000 slice and a multi-frame image (PS3.3 A.3, A.8.5).

Pixel values come from fixed seeds, so every run and both servers get the same bytes. The slices
are a simple phantom (air, soft tissue, two lungs, a spine, noise) rather than noise, so that a
rendered image can be checked by its grey levels where those structures are, and so that JPEG
2000 compresses it the way it compresses a real CT slice.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.encaps import generate_fragmented_frames
from pydicom.uid import JPEG2000Lossless

from _instances import SeriesSpec, StudySpec, derive_uid, image_dataset, part10
from _workload import BENCH_DATE

SLICE_ROWS = 512
WINDOW = (40.0, 400.0)  # soft tissue: lungs render black, the spine white
# Where the phantom's structures are, as fractions of (column, row); see `phantom`.
LUNG_AT, TISSUE_AT, SPINE_AT = (0.33, 0.48), (0.5, 0.36), (0.5, 0.72)


@dataclass(frozen=True)
class ViewingStudy:
    """Series 1: native CT slices; 2: one JPEG 2000 Lossless slice; 3: one multi-frame image."""

    study: StudySpec
    frames: int
    frame_rows: int

    @property
    def slices(self) -> SeriesSpec:
        return self.study.series[0]

    @property
    def compressed(self) -> SeriesSpec:
        return self.study.series[1]

    @property
    def multiframe(self) -> SeriesSpec:
        return self.study.series[2]


def plan_viewing(salt: str, slices: int, frames: int, frame_rows: int) -> ViewingStudy:
    def uids(label: str, count: int) -> tuple[str, ...]:
        return tuple(derive_uid(salt, "viewing", label, i) for i in range(count))

    series = (
        SeriesSpec(derive_uid(salt, "viewing", "series", 1), 1, "CT", uids("slice", slices)),
        SeriesSpec(derive_uid(salt, "viewing", "series", 2), 2, "CT", uids("j2k", 1)),
        SeriesSpec(derive_uid(salt, "viewing", "series", 3), 3, "OT", uids("multiframe", 1)),
    )
    study = StudySpec(
        study_uid=derive_uid(salt, "viewing", "study"),
        patient_id="BENCH-VIEWING",
        patient_name="BENCH^VIEWING",
        study_date=BENCH_DATE,
        accession_number="BVIEWING",
        description="BENCH VIEWING",
        rows=SLICE_ROWS,
        series=series,
    )
    return ViewingStudy(study, frames, frame_rows)


@functools.cache
def phantom(rows: int, seed: int, index: int) -> NDArray[np.uint16]:
    """A 12-bit axial slice in stored values (HU + 1024); `index` moves the lungs a little."""
    y, x = (np.mgrid[0:rows, 0:rows] + 0.5) / rows - 0.5
    hu = np.full((rows, rows), -1000.0)
    hu[(x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1] = 40.0
    lung = 0.13 * (1 + 0.01 * (index % 10))
    for side in (-0.17, 0.17):
        hu[((x - side) / lung) ** 2 + ((y + 0.02) / 0.2) ** 2 <= 1] = -800.0
    hu[x**2 + (y - 0.22) ** 2 <= 0.05**2] = 700.0
    hu += np.random.default_rng([seed, index]).normal(0.0, 12.0, hu.shape)
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)


@functools.cache
def multiframe_pixels(frames: int, rows: int, seed: int) -> bytes:
    """Fixed-seed 12-bit noise, frame after frame: every frame differs from every other."""
    rng = np.random.default_rng([seed, frames, rows])
    return rng.integers(0, 4096, size=(frames, rows, rows), dtype=np.uint16).tobytes()


def slice_pixels(seed: int, index: int) -> bytes:
    """Native little-endian bytes of slice `index`: what its frame 1 must be."""
    return phantom(SLICE_ROWS, seed, index).tobytes()


def viewing_instances(viewing: ViewingStudy, seed: int) -> Iterator[tuple[str, bytes]]:
    """Every instance of the study, as (SOP Instance UID, Part 10 bytes)."""
    study = viewing.study
    for index, sop_uid in enumerate(viewing.slices.sop_uids):
        ds = image_dataset(study, viewing.slices, index)
        ds.WindowCenter, ds.WindowWidth = WINDOW
        ds.PixelData = slice_pixels(seed, index)
        yield sop_uid, part10(ds)
    yield viewing.compressed.sop_uids[0], compressed_instance(viewing, seed)
    yield viewing.multiframe.sop_uids[0], multiframe_instance(viewing, seed)


def compressed_instance(viewing: ViewingStudy, seed: int) -> bytes:
    """The phantom's slice 0 as JPEG 2000 Lossless, encoded by pylibjpeg-openjpeg."""
    ds = image_dataset(viewing.study, viewing.compressed, 0)
    ds.WindowCenter, ds.WindowWidth = WINDOW
    ds.compress(
        JPEG2000Lossless,
        phantom(SLICE_ROWS, seed, 0),
        encoding_plugin="pylibjpeg",
        generate_instance_uid=False,
    )
    return part10(ds)


def multiframe_instance(viewing: ViewingStudy, seed: int) -> bytes:
    """Multi-frame Grayscale Word Secondary Capture: `frames` native frames, one Pixel Data."""
    ds = image_dataset(viewing.study, viewing.multiframe, 0)
    ds.Rows = ds.Columns = viewing.frame_rows
    ds.NumberOfFrames = viewing.frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    ds.PixelData = multiframe_pixels(viewing.frames, viewing.frame_rows, seed)
    return part10(ds)


def codestream(part10_bytes: bytes) -> bytes:
    """The one frame of an encapsulated instance as stored: its JPEG 2000 codestream."""
    ds = dcmread(io.BytesIO(part10_bytes))
    (frame,) = (b"".join(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=1))
    return frame
