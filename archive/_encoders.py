"""Frame encoders for the encapsulated transfer syntaxes Ferry produces (PS3.5 8.2, Annex A.4).

pydicom 3 encodes RLE, JPEG-LS and JPEG 2000 through its plugins (pylibjpeg-rle, pyjpegls,
pylibjpeg-openjpeg) but has no encoder for the JPEG family or HTJ2K; imagecodecs (libjpeg-turbo 3,
OpenJPH) fills those. Whether each one works is asked of the libraries at run time, never assumed.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from archive.pixel_module import PixelModule


def _optional(name: str) -> ModuleType | None:
    """An optional codec library: without it, its syntaxes are simply not offered."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


imagecodecs = _optional("imagecodecs")

# Lossy settings: what a viewer fetching a smaller copy expects, not what an archive would keep.
JPEG_QUALITY = 90
J2K_RMS_ERROR = 2  # grey levels; as a PSNR per bit depth, since a fixed ratio ruins busy images
JPEG_LS_NEAR = 2  # PS3.5 8.2.3: the NEAR parameter, largest error in any sample value


@dataclass(frozen=True)
class FrameEncoder:
    """Encodes one frame into one codestream of `transfer_syntax`.

    `lossy_method` is the LossyImageCompressionMethod term (PS3.3 C.7.6.1.1.5.1) when the
    encoding discards information; None when it is reversible.
    """

    transfer_syntax: UID
    lossy_method: str | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_available(self) -> bool:
        return get_encoder(self.transfer_syntax).is_available

    def encode(self, frame: NDArray[Any], fmt: PixelModule) -> bytes:
        """One frame, as `fmt` describes it with the Photometric Interpretation to encode as."""
        options = dict(self.options)
        if self.transfer_syntax in (JPEG2000Lossless, JPEG2000):
            options["use_mct"] = fmt.photometric_interpretation in ("YBR_RCT", "YBR_ICT")
        if self.transfer_syntax == JPEG2000:  # PSNR is taken against the Bits Stored peak
            psnr = 20 * math.log10((1 << fmt.bits_stored) / J2K_RMS_ERROR)
            options["j2k_psnr"] = [round(psnr, 1)]
        return get_encoder(self.transfer_syntax).encode(
            frame,
            rows=fmt.rows,
            columns=fmt.columns,
            samples_per_pixel=fmt.samples_per_pixel,
            bits_allocated=fmt.bits_allocated,
            bits_stored=fmt.bits_stored,
            pixel_representation=fmt.pixel_representation,
            photometric_interpretation=fmt.photometric_interpretation,
            number_of_frames=1,
            planar_configuration=0,
            **options,
        )


class JPEGEncoder(FrameEncoder):
    """ISO 10918-1 through libjpeg-turbo 3: baseline and extended (8/12-bit), lossless."""

    @property
    def is_available(self) -> bool:
        return imagecodecs is not None and bool(imagecodecs.JPEG8.available)

    def encode(self, frame: NDArray[Any], fmt: PixelModule) -> bytes:
        assert imagecodecs is not None
        if self.lossy_method is None:
            return _encode_jpeg_lossless(frame, fmt)
        if fmt.samples_per_pixel == 3:  # RGB in, YCbCr 4:2:2 out: YBR_FULL_422 (PS3.5 8.2.1)
            return bytes(imagecodecs.jpeg8_encode(frame, level=JPEG_QUALITY, subsampling="422"))
        precision = 8 if fmt.bits_stored <= 8 else 12
        data = frame.astype(np.uint8) if precision == 8 else frame.astype(np.uint16)
        return bytes(imagecodecs.jpeg8_encode(data, level=JPEG_QUALITY, bitspersample=precision))


def _encode_jpeg_lossless(frame: NDArray[Any], fmt: PixelModule) -> bytes:
    """Process 14, first-order prediction (SV1), which is also a valid Process 14 stream.

    Signed samples go in as their two's complement bit pattern of Bits Stored bits, as
    PS3.5 8.2.1 has it; the decoder sign-extends them again from Pixel Representation.
    """
    assert imagecodecs is not None
    unsigned = frame.view(np.uint16 if frame.itemsize == 2 else np.uint8)
    if fmt.pixel_representation and fmt.bits_stored < 8 * frame.itemsize:
        unsigned = np.bitwise_and(unsigned, (1 << fmt.bits_stored) - 1)
    if fmt.bits_stored <= 8:  # libjpeg-turbo takes 8-bit samples for precisions up to 8
        unsigned = unsigned.astype(np.uint8)
    colour = {"colorspace": "RGB", "outcolorspace": "RGB"} if fmt.samples_per_pixel == 3 else {}
    return bytes(
        imagecodecs.jpeg8_encode(
            unsigned, lossless=True, predictor=1, bitspersample=fmt.bits_stored, **colour
        )
    )


class HTJ2KEncoder(FrameEncoder):
    """ISO 15444-15 through OpenJPH; colour goes through the component transform (YBR_RCT/ICT)."""

    @property
    def is_available(self) -> bool:
        return imagecodecs is not None and bool(imagecodecs.HTJ2K.available)

    def encode(self, frame: NDArray[Any], fmt: PixelModule) -> bytes:
        assert imagecodecs is not None
        reversible = self.lossy_method is None
        # OpenJPH's quantisation step is relative to the sample range: about one grey level.
        qstep = None if reversible else 1.0 / (1 << fmt.bits_stored)
        return bytes(
            imagecodecs.htj2k_encode(
                frame,
                level=qstep,
                reversible=reversible,
                rgb=fmt.samples_per_pixel == 3,
            )
        )


ENCODERS: dict[UID, FrameEncoder] = {
    encoder.transfer_syntax: encoder
    for encoder in (
        FrameEncoder(RLELossless, None),
        JPEGEncoder(JPEGBaseline8Bit, "ISO_10918_1"),
        JPEGEncoder(JPEGExtended12Bit, "ISO_10918_1"),
        JPEGEncoder(JPEGLossless, None),
        JPEGEncoder(JPEGLosslessSV1, None),
        FrameEncoder(JPEGLSLossless, None),
        FrameEncoder(JPEGLSNearLossless, "ISO_14495_1", {"jls_error": JPEG_LS_NEAR}),
        FrameEncoder(JPEG2000Lossless, None),
        FrameEncoder(
            JPEG2000,
            "ISO_15444_1",
        ),
        HTJ2KEncoder(HTJ2KLossless, None),
        HTJ2KEncoder(HTJ2K, "ISO_15444_15"),
    )
}
