"""Transfer syntax families, in one table built from pydicom's UID constants (PS3.5 A, Table A-4).

Every place that asks "is this JPEG? video? which media type?" asks this table, never the UID's
digits: the families, each codestream's start marker (PS3.5 A.4: each frame's stream opens its
own fragment), and the media types of PS3.18 Table 8.7.3-5 and PS3.5 Table A-4.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import uid

__all__ = ["FAMILIES", "Family", "family_of", "is_video", "media_type_of", "start_markers"]

_JPEG_SOI = (b"\xff\xd8",)
_J2K_SOC = (b"\xff\x4f\xff\x51",)
_JXL = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")


@dataclass(frozen=True)
class Family:
    """Transfer syntaxes that share a codestream: its name, media type and start markers."""

    name: str
    syntaxes: frozenset[str]
    media_type: str | None = None  # None: native, sent as application/octet-stream
    start_markers: tuple[bytes, ...] = ()
    video: bool = False  # one stream holds every frame


def _uids(*names: str) -> frozenset[str]:
    return frozenset(str(getattr(uid, name)) for name in names)


# Newer than pydicom 3.0's constants (PS3.5 Table A-1, 2024): named here, with their UIDs.
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
JPEG_XL = frozenset(
    {"1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"}
)


FAMILIES: tuple[Family, ...] = (
    Family(
        "native",
        _uids(
            "ImplicitVRLittleEndian",
            "ExplicitVRLittleEndian",
            "DeflatedExplicitVRLittleEndian",
            "ExplicitVRBigEndian",
        ),
    ),
    Family("encapsulated uncompressed", frozenset({ENCAPSULATED_UNCOMPRESSED})),
    Family(
        "JPEG",
        _uids("JPEGBaseline8Bit", "JPEGExtended12Bit", "JPEGLossless", "JPEGLosslessSV1"),
        "image/jpeg",
        _JPEG_SOI,
    ),
    Family("JPEG-LS", _uids("JPEGLSLossless", "JPEGLSNearLossless"), "image/jls", _JPEG_SOI),
    Family("JPEG 2000", _uids("JPEG2000Lossless", "JPEG2000"), "image/jp2", _J2K_SOC),
    Family(
        "JPEG 2000 multi-component",
        _uids("JPEG2000MCLossless", "JPEG2000MC"),
        "image/jpx",
        _J2K_SOC,
    ),
    Family("HTJ2K", _uids("HTJ2KLossless", "HTJ2KLosslessRPCL", "HTJ2K"), "image/jphc", _J2K_SOC),
    Family("JPEG XL", JPEG_XL, "image/jxl", _JXL),
    Family("RLE", _uids("RLELossless"), "image/dicom-rle"),
    Family(
        "MPEG-2",
        _uids("MPEG2MPML", "MPEG2MPMLF", "MPEG2MPHL", "MPEG2MPHLF"),
        "video/mpeg",
        video=True,
    ),
    Family(
        "MPEG-4",
        _uids(
            "MPEG4HP41",
            "MPEG4HP41F",
            "MPEG4HP41BD",
            "MPEG4HP41BDF",
            "MPEG4HP422D",
            "MPEG4HP422DF",
            "MPEG4HP423D",
            "MPEG4HP423DF",
            "MPEG4HP42STEREO",
            "MPEG4HP42STEREOF",
        ),
        "video/mp4",
        video=True,
    ),
    Family("HEVC", _uids("HEVCMP51", "HEVCM10P51"), "video/H265", video=True),
)
_BY_SYNTAX = {syntax: family for family in FAMILIES for syntax in family.syntaxes}


def family_of(transfer_syntax_uid: str) -> Family | None:
    return _BY_SYNTAX.get(str(transfer_syntax_uid))


def is_video(transfer_syntax_uid: str) -> bool:
    family = family_of(transfer_syntax_uid)
    return bool(family and family.video)


def media_type_of(transfer_syntax_uid: str) -> str | None:
    family = family_of(transfer_syntax_uid)
    return family.media_type if family else None


def start_markers(transfer_syntax_uid: str) -> tuple[bytes, ...]:
    family = family_of(transfer_syntax_uid)
    return family.start_markers if family else ()
