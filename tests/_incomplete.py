"""Data sets that are not whole, as careless or interrupted senders make them, and the refusal
each must meet at every entrance (STOW-RS, C-STORE, `ferry import`): PS3.4 Table B.2-1."""

from __future__ import annotations

from dataclasses import dataclass

from archive.outcomes import CANNOT_UNDERSTAND, DATA_SET_DOES_NOT_MATCH_SOP_CLASS
from tests import factories
from tests.factories import StudySpec


@dataclass(frozen=True)
class Incomplete:
    data: bytes
    sop_instance_uid: str
    reason: int  # the failure reason (STOW-RS) and the C-STORE status
    says: str  # what the refusal's message starts with or contains


def cut_at_60_percent() -> Incomplete:
    """A 16×16 CT cut inside an element before its pixel data."""
    ds = factories.ct_slice(16, 16, spec=StudySpec())
    data = factories.part10_bytes(ds)
    cut = data[: len(data) * 60 // 100]
    return Incomplete(
        cut, ds.SOPInstanceUID, CANNOT_UNDERSTAND, f"data set truncated at byte {len(cut)}"
    )


def without_pixel_data() -> Incomplete:
    ds = factories.ct_slice(16, 16, spec=StudySpec())
    del ds.PixelData
    data = factories.part10_bytes(ds)
    return Incomplete(data, ds.SOPInstanceUID, DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "PixelData")


def short_pixel_data() -> Incomplete:
    ds = factories.mr_multiframe(frames=2, rows=16, columns=16, spec=StudySpec())
    ds.NumberOfFrames = 3  # 2 frames of pixels, 3 announced
    data = factories.part10_bytes(ds)
    return Incomplete(data, ds.SOPInstanceUID, DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "PixelData holds")


INCOMPLETE = {
    "cut at 60 %": cut_at_60_percent,
    "image without pixel data": without_pixel_data,
    "native pixel data too short": short_pixel_data,
}
