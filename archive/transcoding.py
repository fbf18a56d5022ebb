"""Transcoding retrieved instances (PS3.5 Section 10 and Annex A; PS3.18 8.7.3).

Every change pivots on native pixels: pydicom's decoders yield the stored frames one at a time and,
for an encapsulated target, each frame is encoded again on its own (`archive._encoders`), so a
large multi-frame never lies decoded in memory whole. A data set without Pixel Data is only
re-encoded: implicit, explicit and deflated differ in the whole data set, while an encapsulated
syntax changes nothing but Pixel Data (PS3.5 A.4), so such an instance asked for as, say,
JPEG 2000 is Explicit VR Little Endian under that syntax's UID.

Lossy output is marked (LossyImageCompression "01", Method and Ratio appended, PS3.3
C.7.6.1.1.5); decoding a lossy-stored instance into a lossless syntax keeps its "01".
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from functools import cache
from typing import IO, Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import ENCODING_PROFILES
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from archive._encoders import ENCODERS, FrameEncoder
from archive.pixel_module import (
    BadValues,
    PixelModule,
    read_pixel_module,
    read_pixel_module_from_file,
)

__all__ = [
    "LOSSY",
    "NATIVE",
    "SPOOL_BYTES",
    "read_pixels",
    "reason_not_producible",
    "transcode",
    "transcoding_table",
]

SPOOL_BYTES = 4 * 1024 * 1024  # a transcoded instance or its pixel data past this goes to disk
NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
ENCAPSULATED = frozenset(
    {RLELossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}
    | {JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000}
    | {HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}
)
LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, HTJ2K})
_MAX_NATIVE_LENGTH = 0xFFFFFFFE  # PS3.5 7.1.1: an even 32-bit value length
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
# PS3.5 8.2: HTJ2K takes the pixels that JPEG 2000 takes.
_PROFILE_OF = {HTJ2KLossless: JPEG2000Lossless, HTJ2K: JPEG2000}
# Encoders (archive._encoders) that mark colour as RGB or transform it, so YBR_FULL can't go in.
_RGB_ONLY = frozenset({HTJ2KLossless, HTJ2K, JPEGLossless, JPEGLosslessSV1})


def _can_decode(syntax: UID) -> bool:
    return syntax in NATIVE or (syntax in ENCAPSULATED and get_decoder(syntax).is_available)


def _can_encode(syntax: UID) -> bool:
    return syntax in NATIVE or (syntax in ENCODERS and ENCODERS[syntax].is_available)


@cache
def transcoding_table() -> Mapping[UID, frozenset[UID]]:
    """Stored syntax → the syntaxes Ferry can send it in, from the codecs installed now.

    Decoding to native pixels is the pivot, so every decodable syntax reaches every encodable
    one, and itself. Whether one instance's pixels fit a target is `reason_not_producible`'s call.
    """
    known = sorted(NATIVE | ENCAPSULATED)
    targets = frozenset(syntax for syntax in known if _can_encode(syntax))
    return {source: targets | {source} for source in known if _can_decode(source)}


# pydicom's decoders read these from the data set itself: a default of ours would not reach them.
_DECODER_NEEDS = frozenset({"PhotometricInterpretation", "BitsStored", "PixelRepresentation"})


def read_pixels(fp: BinaryIO) -> PixelModule:
    """What decides whether a codec can take the instance; bad values are tolerated, so that a
    file stored leniently is refused by `reason_not_producible` (a 406), never a 500."""
    return read_pixel_module_from_file(fp, bad_values=BadValues.TOLERATE)


def _incomplete(pixels: PixelModule) -> str | None:
    """Why pydicom could not decode the pixels as the module describes them, if so."""
    if pixels.problem is not None:
        return pixels.problem
    if pixels.notes:
        return "; ".join(pixels.notes)
    needed = sorted(_DECODER_NEEDS.intersection(pixels.defaulted))
    return f"{', '.join(needed)} missing" if needed else None


def reason_not_producible(stored: str, target: str, pixels: PixelModule) -> str | None:
    """None when the instance can be sent in `target`; otherwise why not, for the 406 message."""
    stored, target = UID(stored), UID(target)
    if target == stored:
        return None
    if target not in NATIVE | ENCAPSULATED or not _can_encode(target):
        return f"Ferry cannot produce {_named(target)}"
    if pixels.pixel_keyword != "PixelData":
        if pixels.pixel_keyword is not None and target not in NATIVE:
            return "Float Pixel Data has no encapsulated form (PS3.5 A.4)"
        return None if stored in NATIVE | ENCAPSULATED else f"{_named(stored)} is not transcoded"
    if stored not in transcoding_table():
        return f"Ferry cannot decode {_named(stored)}"
    incomplete = _incomplete(pixels)
    if incomplete is not None:
        return f"its Image Pixel module is incomplete: {incomplete}"
    if target in NATIVE:
        if pixels.native_length > _MAX_NATIVE_LENGTH:
            return "its decoded pixels exceed the 4 GiB a native Pixel Data value can hold"
        return None
    return _reason_profile_refuses(target, pixels)


def _reason_profile_refuses(target: UID, pixels: PixelModule) -> str | None:
    decoded = _decoded_photometric(pixels.photometric_interpretation)
    if target in _RGB_ONLY and decoded == "YBR_FULL":
        return f"Ferry's {_named(target)} encoder takes RGB, not YBR_FULL, colour pixels"
    encoded = _encoded_photometric(target, decoded)
    fits = any(
        profile[0] == encoded
        and profile[1] == pixels.samples_per_pixel
        and pixels.pixel_representation in profile[2]
        and pixels.bits_allocated in profile[3]
        and pixels.bits_stored in profile[4]
        for profile in ENCODING_PROFILES[_PROFILE_OF.get(target, target)]
    )
    if fits:
        return None
    sign = "signed" if pixels.pixel_representation else "unsigned"
    return (
        f"{_named(target)} cannot hold its pixels ({pixels.photometric_interpretation}, "
        f"{pixels.samples_per_pixel} sample(s) of {pixels.bits_stored} bits stored in "
        f"{pixels.bits_allocated}, {sign}; PS3.5 8.2)"
    )


def _named(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.is_transfer_syntax else str(syntax)


def _decoded_photometric(stored: str) -> str:
    """pydicom hands colour out as RGB, except YBR_FULL, which is kept so that it stays exact."""
    return "RGB" if stored.startswith("YBR_") and stored != "YBR_FULL" else stored


def _encoded_photometric(target: UID, decoded: str) -> str:
    """PS3.5 8.2: what the codec's own colour handling makes of RGB or YBR_FULL input."""
    if decoded not in ("RGB", "YBR_FULL"):
        return decoded
    if target in (JPEGBaseline8Bit, JPEGExtended12Bit):
        return "YBR_FULL_422"
    if decoded == "RGB" and target in (JPEG2000Lossless, HTJ2KLossless):
        return "YBR_RCT"
    if decoded == "RGB" and target in (JPEG2000, HTJ2K):
        return "YBR_ICT"
    return decoded


def transcode(source: BinaryIO, target: str, sink: IO[bytes]) -> None:
    """Write the Part 10 instance read from `source` to `sink` as a Part 10 file in `target`.

    The caller has asked `reason_not_producible` first; a codec failing here (corrupt data)
    raises whatever the codec raised.
    """
    ds = dcmread(source)
    stored, target = UID(ds.file_meta.TransferSyntaxUID), UID(target)
    recode = "PixelData" in ds and not {stored, target} <= NATIVE and stored != target
    with _recode_pixel_data(ds, stored, target) if recode else io.BytesIO():
        ds.file_meta.TransferSyntaxUID = target
        if target == DeflatedExplicitVRLittleEndian:
            _write_deflated(ds, sink)
        else:
            dcmwrite(sink, ds, enforce_file_format=True)


def _recode_pixel_data(ds: Dataset, stored: UID, target: UID) -> IO[bytes]:
    """Replace Pixel Data with a buffer of the target's encoding; the caller closes it."""
    pixels = read_pixel_module(ds, "PixelData", bad_values=BadValues.REFUSE)
    keep_ybr = pixels.photometric_interpretation == "YBR_FULL"
    frames = get_decoder(stored).iter_array(ds, raw=keep_ybr)
    first, meta = next(frames)
    decoded_pi = str(meta["photometric_interpretation"])
    frames_only = _chain(first, (frame for frame, _ in frames))
    buffer = _new_buffer(pixels.native_length)
    if target in NATIVE:
        _write_native(buffer, frames_only, pixels.bits_allocated)
        ds.PhotometricInterpretation = decoded_pi
        ds["PixelData"].VR = "OB" if pixels.bits_allocated <= 8 else "OW"
    else:
        encoder = ENCODERS[target]
        encoded_pi = _encoded_photometric(target, decoded_pi)
        fmt = replace(pixels, photometric_interpretation=encoded_pi, number_of_frames=1)
        rgb_only = encoded_pi == "YBR_FULL_422" and decoded_pi == "YBR_FULL"
        codestreams = (
            encoder.encode(
                np.ascontiguousarray(convert_color_space(f, "YBR_FULL", "RGB") if rgb_only else f),
                fmt,
            )
            for f in frames_only
        )
        length = _write_encapsulated(buffer, codestreams, pixels.number_of_frames)
        ds.PhotometricInterpretation = encoded_pi
        ds["PixelData"].VR = "OB"
        _mark_if_lossy(ds, encoder, pixels.native_length, length)
    if pixels.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0  # decoded frames are interleaved; PS3.5 8.2 wants 0 here too
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:  # they described the stored fragments
            delattr(ds, keyword)
    buffer.seek(0)
    ds.PixelData = buffer
    return buffer


def _chain(first: NDArray[Any], rest: Iterable[NDArray[Any]]) -> Iterator[NDArray[Any]]:
    yield first
    yield from rest


def _new_buffer(expected: int) -> IO[bytes]:
    """pydicom streams a value from a BufferedIOBase; small ones stay in memory."""
    return io.BytesIO() if expected <= SPOOL_BYTES else tempfile.TemporaryFile()


def _write_native(buffer: IO[bytes], frames: Iterator[NDArray[Any]], bits_allocated: int) -> None:
    if bits_allocated == 1:  # PS3.5 8.1.1: bits run on across frame boundaries
        buffer.write(pack_bits(np.stack(list(frames))))
    else:
        for frame in frames:
            buffer.write(np.ascontiguousarray(frame).tobytes())
    if buffer.tell() % 2:
        buffer.write(b"\x00")


def _write_encapsulated(buffer: IO[bytes], codestreams: Iterator[bytes], frames: int) -> int:
    """PS3.5 A.4: a Basic Offset Table item, then one fragment per frame; returns the length."""
    buffer.write(_ITEM + struct.pack("<I", 4 * frames))
    table_at = buffer.tell()
    buffer.write(bytes(4 * frames))
    offsets: list[int] = []
    position = 0
    for codestream in codestreams:
        padded = codestream + b"\x00" if len(codestream) % 2 else codestream
        offsets.append(position)
        buffer.write(_ITEM + struct.pack("<I", len(padded)))
        buffer.write(padded)
        position += 8 + len(padded)
    if len(offsets) != frames or offsets[-1] > 0xFFFFFFFF:
        raise ValueError(f"{len(offsets)} frames decoded of {frames}, or over 4 GiB encoded")
    buffer.seek(table_at)
    buffer.write(struct.pack(f"<{frames}I", *offsets))
    return 8 + 4 * frames + position


def _mark_if_lossy(ds: Dataset, encoder: FrameEncoder, native: int, encoded: int) -> None:
    """PS3.3 C.7.6.1.1.5: once lossy, "01"; each compression appends its method and ratio."""
    if encoder.lossy_method is None:
        return
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = [
        *_values(ds, "LossyImageCompressionMethod"),
        encoder.lossy_method,
    ]
    ratio = f"{native / max(encoded, 1):.2f}"
    ds.LossyImageCompressionRatio = [*_values(ds, "LossyImageCompressionRatio"), ratio]


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


class _DeflatingWriter:
    """The raw deflate stream of PS3.5 A.5 written through to `sink` as the data set is encoded."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        self._written = 0  # deflated bytes, for the trailing pad
        self._position = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._position += len(data)
        self._emit(self._compressor.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """pydicom asks for seek() to exist; data set encoding never moves back in the stream."""
        raise io.UnsupportedOperation("a deflate stream only goes forward")

    def finish(self) -> None:
        self._emit(self._compressor.flush())
        if self._written % 2:
            self._sink.write(b"\x00")

    def _emit(self, deflated: bytes) -> None:
        self._written += len(deflated)
        self._sink.write(deflated)


def _write_deflated(ds: Dataset, sink: IO[bytes]) -> None:
    """pydicom would deflate the whole encoded data set in memory; this streams it."""
    head = DicomIO(sink)
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = False
    deflater = _DeflatingWriter(sink)
    body = DicomIO(deflater)
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflater.finish()
