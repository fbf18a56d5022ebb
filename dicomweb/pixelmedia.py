"""Media types of pixel data, and the choice of one for frames (PS3.18 8.7.3.3, 8.7.8).

Stored frames go out as they are whenever the client takes that: compressed frames in their own
media type (Table 8.7.3-5) or as `application/octet-stream`, each part naming the stored transfer
syntax. Native little-endian frames are the same bytes whatever the file's VR encoding, so they
are labelled Explicit VR Little Endian (PS3.18 8.7.3 bars Implicit VR from web services).
Only when the client asks for uncompressed frames (octet-stream without a transfer syntax, or
with Explicit VR Little Endian) are compressed frames decoded, and only those returned.

`*/*`, `multipart/*` and `multipart/related` without a type take the frames as stored: every
representation is acceptable then, and this one costs no decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from archive.syntaxes import ENCAPSULATED_UNCOMPRESSED, FAMILIES
from dicomweb.decoding import can_decode
from dicomweb.media import MediaRange
from foundation.errors import NotAcceptable

__all__ = [
    "ANY_TRANSFER_SYNTAX",
    "MEDIA_TYPES",
    "OCTET_STREAM",
    "FrameRepresentation",
    "negotiate_frames",
    "stored_media_type",
]

OCTET_STREAM = "application/octet-stream"
ANY_TRANSFER_SYNTAX = "*"
# PS3.18 Table 8.7.3-5 (images) and PS3.5 Table A-4 (video), from the one table of families.
MEDIA_TYPES: dict[str, str] = {
    syntax: family.media_type
    for family in FAMILIES
    if family.media_type
    for syntax in family.syntaxes
}
# Names clients send for the same things: dicomweb-client (JS) and earlier PS3.18 editions.
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
_ALIASES |= {"image/jph": "image/jphc", "video/mpeg2": "video/mpeg"}
_SAME_AS_EXPLICIT = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ENCAPSULATED_UNCOMPRESSED}
_ANYTHING = {"*/*", "multipart/*"}


@dataclass(frozen=True)
class FrameRepresentation:
    """How frames go out: their media type and transfer syntax, decoded or as stored."""

    media_type: str
    transfer_syntax_uid: str
    decode: bool
    multipart: bool

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax_uid}"


def stored_media_type(transfer_syntax_uid: str) -> str:
    return MEDIA_TYPES.get(transfer_syntax_uid, OCTET_STREAM)


def _as_sent(stored: str) -> str:
    return ExplicitVRLittleEndian if stored in _SAME_AS_EXPLICIT else stored


def negotiate_frames(
    ranges: list[MediaRange], stored: str, *, single_part: bool
) -> FrameRepresentation:
    """The first Accept range that can be met, in the client's order of preference.

    `single_part` allows a bare media type (no multipart/related), for one frame (PS3.18 10.4.4).
    """
    for media in ranges:
        if media.essence == "multipart/related":
            asked, multipart = media.param("type") or "*/*", True
        elif media.essence in _ANYTHING:
            asked, multipart = "*/*", True
        elif single_part:
            asked, multipart = media.essence, False
        else:
            continue
        choice = _choose(asked.lower(), media.param("transfer-syntax"), stored, multipart)
        if choice is not None:
            return choice
    raise NotAcceptable(_refusal(stored, single_part))


def _choose(
    asked: str, syntax: str | None, stored: str, multipart: bool
) -> FrameRepresentation | None:
    sent = _as_sent(stored)
    native = sent == ExplicitVRLittleEndian
    own_type = stored_media_type(stored).lower()
    as_stored = FrameRepresentation(stored_media_type(stored), sent, False, multipart)
    as_octets = FrameRepresentation(OCTET_STREAM, sent, False, multipart)
    decoded = FrameRepresentation(OCTET_STREAM, ExplicitVRLittleEndian, True, multipart)
    if asked == "*/*":
        if syntax in (None, ANY_TRANSFER_SYNTAX, sent, stored):
            return as_stored
        return decoded if syntax == ExplicitVRLittleEndian and can_decode(stored) else None
    if asked in (OCTET_STREAM, "application/*"):
        if syntax in (ANY_TRANSFER_SYNTAX, sent, stored) or (syntax is None and native):
            return as_octets
        if syntax not in (None, ExplicitVRLittleEndian):
            return None
        return decoded if can_decode(stored) else None
    wanted = _ALIASES.get(asked, asked)
    fits = wanted == own_type or (wanted.endswith("/*") and own_type.startswith(wanted[:-1]))
    if own_type == OCTET_STREAM or not fits or syntax not in (None, ANY_TRANSFER_SYNTAX, stored):
        return None
    label = asked if "*" not in asked else stored_media_type(stored)
    return FrameRepresentation(label, stored, False, multipart)


def _refusal(stored: str, single_part: bool) -> str:
    own_type = stored_media_type(stored)
    offers = [f'multipart/related; type="{OCTET_STREAM}"; transfer-syntax={_as_sent(stored)}']
    if own_type != OCTET_STREAM:
        offers.append(f'multipart/related; type="{own_type}"')
    if _as_sent(stored) != ExplicitVRLittleEndian and can_decode(stored):
        offers.append(f'multipart/related; type="{OCTET_STREAM}" (decoded)')
    several = "" if single_part else "; several frames need multipart/related"
    return f"frames are stored as {stored}; available: {', '.join(offers)}{several}"
