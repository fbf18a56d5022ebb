"""Stored frames decoded, one at a time, to native little-endian bytes (PS3.18 8.7.3.3.1).

pydicom's decoders do the work (pylibjpeg-libjpeg for JPEG and JPEG-LS, pylibjpeg-openjpeg for
JPEG 2000 and HTJ2K, pydicom's own for RLE and big endian). A frame is decoded exactly as
`Dataset.pixel_array` would give it, colour included: YBR_FULL and YBR_FULL_422 come out as RGB,
since pixel_array converts them; the metadata's PhotometricInterpretation is not rewritten.

Errors::

    StoredDataUnreadable
    └── FrameNotDecodable    the stored frame does not decode (damaged, or not what it claims)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

from archive.frames import PixelDataLayout
from foundation.errors import StoredDataUnreadable

__all__ = ["FrameNotDecodable", "can_decode", "decode_frame", "decode_frame_array"]


class FrameNotDecodable(StoredDataUnreadable):
    pass


def can_decode(transfer_syntax_uid: str) -> bool:
    """Whether a decoder for the transfer syntax is installed (video never is, here)."""
    try:
        return bool(get_decoder(transfer_syntax_uid).is_available)
    except NotImplementedError:
        return False


def decode_frame(encoded: bytes, layout: PixelDataLayout) -> bytes:
    """One frame's stored bytes to its pixels, little endian, interleaved samples."""
    array = decode_frame_array(encoded, layout)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def decode_frame_array(encoded: bytes, layout: PixelDataLayout) -> NDArray[Any]:
    """One frame's stored bytes (`archive.frames.read_frame`) as pydicom's array of it."""
    pixel = layout.pixel
    options: dict[str, object] = {
        "rows": pixel.rows,
        "columns": pixel.columns,
        "samples_per_pixel": pixel.samples_per_pixel,
        "bits_allocated": pixel.bits_allocated,
        "bits_stored": pixel.bits_stored,
        "pixel_representation": pixel.pixel_representation,
        "photometric_interpretation": pixel.photometric_interpretation,
        "number_of_frames": 1,
        "pixel_keyword": pixel.pixel_keyword,
    }
    if pixel.samples_per_pixel > 1:
        options["planar_configuration"] = pixel.planar_configuration
    if not layout.encapsulated:
        options["pixel_vr"] = "OW" if pixel.bits_allocated > 8 else "OB"
    source = encapsulate([encoded]) if layout.encapsulated else encoded
    decoder = get_decoder(layout.transfer_syntax_uid)
    try:
        array, _ = decoder.as_array(source, index=0, **options)  # type: ignore[arg-type]
    except Exception as error:  # each plugin fails in its own way on a damaged stream
        raise FrameNotDecodable(f"a stored frame could not be decoded: {error}") from None
    return array
