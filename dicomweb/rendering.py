"""Rendered images: one stored instance to JPEG, PNG or GIF (PS3.18 8.3.5.1, PS3.3 C.11).

Pure of HTTP: a stored file, frame numbers and the presentation options in, bytes out. The
grayscale pipeline is the standard's (PS3.4 N.2.1.1): Modality LUT, VOI LUT, then MONOCHROME1
inverted; colour is converted to RGB by pydicom while decoding (YBR_* via convert_color_space,
planar configuration undone) or looked up in the palette. Only the frames asked for are decoded,
found exactly as /frames finds them (`archive.framecache`, `archive.frames`) and decoded by the
same code (`dicomweb.decoding`), so whatever /frames serves renders.

Errors::

    NotAcceptable
    └── NoRenditionAccepted   none of the asked media types fits this instance
    StoredDataUnreadable      the stored instance's header, attributes or frames cannot be read
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_fragments
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.uid import UID

from archive.blobstore import BlobStore
from archive.framecache import open_pixel_data, read_layout
from archive.frames import PixelDataLayout, read_frame
from archive.syntaxes import FAMILIES
from dicomweb.decoding import can_decode, decode_frame_array
from dicomweb.viewport import Region, Viewport, apply_geometry
from dicomweb.voi import Window, apply_voi
from foundation.errors import InvalidQuery, NotAcceptable, NotFound, StoredDataUnreadable

__all__ = [
    "GIF",
    "IMAGE_TYPES",
    "JPEG",
    "PNG",
    "NoRenditionAccepted",
    "Region",
    "RenderOptions",
    "Rendered",
    "Viewport",
    "Window",
    "render_stored",
]

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
IMAGE_TYPES = (JPEG, PNG, GIF)  # the first is the default for */* and image/*
DEFAULT_QUALITY = 90
MAX_ANIMATED_FRAMES = 300  # a GIF of more frames costs more than any viewer wants to wait
_DEFAULT_FRAME_TIME_MS = 100.0
_IMAGE_PIXEL_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")

# A video renders as its stream (PS3.5 Table A-4): MPEG-2 as video/mpeg, the others as video/mp4.
VIDEO_TYPES = {
    syntax: "video/mpeg" if family.name == "MPEG-2" else "video/mp4"
    for family in FAMILIES
    if family.video
    for syntax in family.syntaxes
}


class NoRenditionAccepted(NotAcceptable):
    """The instance renders, but not as any media type the client named (or not at all)."""


@dataclass(frozen=True)
class RenderOptions:
    """What the client may choose (PS3.18 8.3.5.1.2-4, and 9's region for WADO-URI)."""

    window: Window | None = None
    viewport: Viewport | None = None
    region: Region | None = None
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise InvalidQuery(f"quality {self.quality} must be between 1 and 100")


@dataclass(frozen=True)
class Rendered:
    content: bytes
    media_type: str
    warnings: tuple[str, ...] = ()


def render_stored(
    blobs: BlobStore,
    blob_key: str,
    accepted: Sequence[str],
    frames: Sequence[int] | None,
    options: RenderOptions,
    *,
    images_only: bool = False,
    frame_cache: Path | None = None,
) -> Rendered:
    """Render one stored instance as the first of `accepted` (media type essences) it fits.

    `frames` are 1-based; None means the first frame, or every frame for an animated GIF.
    `frame_cache` is the folder of cached frame layouts that /frames uses too.
    """
    with blobs.open(blob_key) as handle:
        header = _read_header(handle)
        available = rendered_media_types(header)
        if images_only:
            available = tuple(t for t in available if t in IMAGE_TYPES)
        media_type = choose_media_type(accepted, available, header)
        if media_type in IMAGE_TYPES:
            layout = read_layout(blobs, blob_key, frame_cache)
            with open_pixel_data(blobs, blob_key, layout) as pixels:
                return _render_frames(pixels, header, layout, media_type, frames, options)
        if frames:
            raise InvalidQuery(f"{media_type} has no frames to choose from")
        if "EncapsulatedDocument" in header:
            return Rendered(_document(header), media_type)
        return Rendered(_video_stream(handle), media_type)


def _read_header(handle: BinaryIO) -> Dataset:
    try:
        return dcmread(handle, stop_before_pixels=True, force=True)
    except Exception as error:  # pydicom raises many kinds on damaged files
        raise StoredDataUnreadable(f"the stored instance cannot be parsed: {error}") from None


def rendered_media_types(header: Dataset) -> tuple[str, ...]:
    """What an instance can be rendered as, its default first; empty when nothing."""
    if "EncapsulatedDocument" in header:
        return (str(header.get("MIMETypeOfEncapsulatedDocument") or "application/octet-stream"),)
    syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
    if syntax in VIDEO_TYPES:
        return (VIDEO_TYPES[syntax],)
    # Any Image Pixel attribute makes it an image: one missing or bad is then the stored data's
    # fault, said by the frames' reading (422), not a choice of media type (406).
    if any(k in header for k in _IMAGE_PIXEL_KEYWORDS):
        return IMAGE_TYPES
    return ()


def choose_media_type(accepted: Sequence[str], available: Sequence[str], header: Dataset) -> str:
    for essence in accepted:
        if essence in available:
            return essence
        family = essence.removesuffix("*")
        if essence.endswith("/*") or essence == "*/*":
            match = [t for t in available if essence == "*/*" or t.startswith(family)]
            if match:
                return match[0]
    if not available:
        sop_class = getattr(header.get("SOPClassUID"), "name", "this SOP class")
        raise NoRenditionAccepted(f"an instance of {sop_class} has no image to render")
    raise NoRenditionAccepted(
        f"this instance is rendered as {', '.join(available)}, not {', '.join(accepted)}"
    )


def _frame_indices(frames: Sequence[int] | None, count: int, media_type: str) -> list[int]:
    if frames is None:
        return list(range(min(count, MAX_ANIMATED_FRAMES))) if media_type == GIF else [0]
    if len(frames) > 1 and media_type != GIF:
        raise InvalidQuery(f"{media_type} holds one frame; ask for image/gif to get several")
    for number in frames:
        if number < 1:
            raise InvalidQuery(f"frame number {number} must be 1 or more")
        if number > count:
            raise NotFound(f"frame {number} is past the last frame ({count})")
    if len(frames) > MAX_ANIMATED_FRAMES:
        raise InvalidQuery(f"at most {MAX_ANIMATED_FRAMES} frames make one animation")
    return [number - 1 for number in frames]


def _render_frames(
    handle: BinaryIO,
    header: Dataset,
    layout: PixelDataLayout,
    media_type: str,
    frames: Sequence[int] | None,
    options: RenderOptions,
) -> Rendered:
    count = len(layout.frames)
    indices = _frame_indices(frames, count, media_type)
    warnings = list(layout.pixel.notes)
    if frames is None and media_type == GIF and count > len(indices):
        warnings.append(f"the animation holds the first {len(indices)} of {count} frames")
    images = []
    for index, pixels in zip(indices, _iter_frames(handle, layout, indices), strict=True):
        try:
            image, notes = _present(pixels, _frame_attributes(header, index), options.window)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as error:
            raise StoredDataUnreadable(f"the image attributes cannot be applied: {error}") from None
        images.append(apply_geometry(image, options.region, options.viewport))
        warnings += [n for n in notes if n not in warnings]
    content = _encode(images, media_type, options.quality, _frame_time(header, warnings))
    return Rendered(content, media_type, tuple(warnings))


def _iter_frames(
    handle: BinaryIO, layout: PixelDataLayout, indices: list[int]
) -> Iterator[NDArray[np.generic]]:
    """The frames as /frames finds them, decoded one at a time as /frames decodes them."""
    syntax = layout.transfer_syntax_uid
    if layout.video or not can_decode(syntax):
        name = getattr(UID(syntax), "name", syntax)
        raise NoRenditionAccepted(f"the pixel data ({name}) cannot be decoded here")
    for index in indices:
        yield decode_frame_array(read_frame(handle, layout.frames[index]), layout)


def _frame_attributes(header: Dataset, index: int) -> Dataset:
    """An enhanced multi-frame's rescale and window for one frame (PS3.3 C.7.6.16.2)."""
    shared = header.get("SharedFunctionalGroupsSequence")
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame:
        return header
    groups = [shared[0]] if shared else []
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    frame = copy.copy(header)
    for group in groups:
        for keyword in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            for item in group.get(keyword) or []:
                for element in item:
                    frame[element.tag] = element
    return frame


def _present(
    pixels: NDArray[np.generic], ds: Dataset, window: Window | None
) -> tuple[Image.Image, list[str]]:
    """Stored values to displayed 8-bit values: grayscale through the LUTs, colour as RGB."""
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)[..., :3]
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return Image.fromarray(_to_8_bits(rgb, bits), "RGB"), _colour_notes(window)
    if pixels.ndim == 3:
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
        return Image.fromarray(_to_8_bits(pixels, bits), "RGB"), _colour_notes(window)
    values = apply_modality_lut(pixels, ds)
    shown = apply_voi(values, ds, window)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    return Image.fromarray(np.rint(shown * 255).astype(np.uint8), "L"), []


def _colour_notes(window: Window | None) -> list[str]:
    return ["window applies to grayscale images only; ignored"] if window else []


def _to_8_bits(values: NDArray[np.generic], bits: int) -> NDArray[np.uint8]:
    if bits <= 8:
        return values.astype(np.uint8)
    return (values.astype(np.uint32) >> (bits - 8)).astype(np.uint8)


def _milliseconds(value: float) -> float:
    return value


def _rate_to_milliseconds(rate: float) -> float:
    return 1000.0 / rate


# Frame Time is in ms; Cine Rate in frames per second (PS3.3 C.7.6.5)
_FRAME_TIME_IN_MS: tuple[tuple[str, Callable[[float], float]], ...] = (
    ("FrameTime", _milliseconds),
    ("CineRate", _rate_to_milliseconds),
)


def _frame_time(header: Dataset, warnings: list[str]) -> float:
    for keyword, to_ms in _FRAME_TIME_IN_MS:
        value = header.get(keyword)
        if not value:
            continue
        try:
            return float(to_ms(float(value)))
        except (TypeError, ValueError, ZeroDivisionError):
            warnings.append(f"{keyword} {str(value)[:40]!r} is not a number; ignored")
    return _DEFAULT_FRAME_TIME_MS


def _encode(images: list[Image.Image], media_type: str, quality: int, frame_ms: float) -> bytes:
    buffer = io.BytesIO()
    first = images[0]
    if media_type == JPEG:
        first.save(buffer, format="JPEG", quality=quality)
    elif media_type == PNG:
        first.save(buffer, format="PNG")
    else:
        duration = max(20, math.floor(frame_ms))  # browsers slow anything faster to 100 ms
        first.save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        )
    return buffer.getvalue()


def _document(header: Dataset) -> bytes:
    """The document as sent: its length drops the pad byte that made the value even."""
    document = bytes(header.EncapsulatedDocument)
    length = header.get("EncapsulatedDocumentLength")
    return document[: int(length)] if length else document


def _video_stream(handle: BinaryIO) -> bytes:
    """The encapsulated stream, fragments joined after the Basic Offset Table (PS3.5 8.2.5)."""
    handle.seek(0)
    dataset = dcmread(handle)
    fragments = generate_fragments(dataset.PixelData)
    next(fragments, None)
    return b"".join(fragments)
