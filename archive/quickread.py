"""The common received instance read in one pass: identity, index facts, DICOM JSON from raw bytes.

`archive.parse.read_received` parses a part with pydicom, walks its structure again
(`archive.structure`), and `archive.dicomjson` then has pydicom convert every value to build the
DICOM JSON. For the instance most senders send, all of that can be read from the element headers
and raw values in one walk: this module does so, and gives up (`None`) on anything it does not
read exactly as that path does, which then runs instead. What it reads:

- a Part 10 file: preamble, ``DICM``, a File Meta group in Explicit VR Little Endian naming
  Implicit VR Little Endian or Explicit VR Little Endian (native, or encapsulated pixel data);
  not deflated, not big endian;
- elements of defined length, in ascending tag order, each of a VR it converts (text, numbers,
  binary; not UN, AT, SV, UV; in Implicit VR, the dictionary's VR, so no private element and
  none of several VRs), and sequences of defined or undefined length at any depth, up to the
  pixel data, whose tail (fragments, trailing elements) `archive.structure` walks as before;
- Specific Character Set absent, ISO_IR 6, ISO_IR 100 or ISO_IR 192, at the top level only,
  and no escape sequences;
- every string value one pydicom's validators accept (so pydicom would read it without a
  warning), every UID of the identity valid, and native pixel data at least as long as the
  Image Pixel module says.

Anything else (other syntaxes and character sets, a refusal to make) is left to the pydicom
path, so that what is stored, indexed and refused stays exactly what it was.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import RE_VALID_UID, UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import (
    MAX_VALUE_LEN,
    STR_VR_REGEXES,
    VALIDATORS,
    validate_length_and_type_and_regex,
    validate_type_and_length,
    validate_type_and_regex,
)

from archive import dicomjson
from archive.completeness import IMAGE_STORAGE_SOP_CLASSES
from archive.facts import FACT_TAGS, SEQUENCE_FACTS
from archive.parse import ParsedInstance
from archive.structure import (
    PIXEL_DATA_TAGS,
    UNDEFINED_LENGTH,
    MalformedDataSet,
    _Encoding,
    _Source,
    _Walker,
)

__all__ = ["QuickRead", "quick_read"]

log = logging.getLogger(__name__)

_HEAD = 64 * 1024  # first read: the whole header of a usual image, and more
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8}
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})
_SINGLE_VRS = frozenset({"ST", "LT", "UT"})  # one value, backslashes and all
_SPLIT_RSTRIP = frozenset({"CS", "AS", "DA", "DT", "TM", "UI", "IS"})  # pydicom's multi_string
_CONVERTED = _CHARSET_VRS | _SPLIT_RSTRIP | {"AE", "DS", "UR"} | set(_NUMBERS) | _BINARY
_TEXT_VRS = (_CHARSET_VRS | _SPLIT_RSTRIP | {"AE", "UR"} | set(_NUMBERS)) - {"FL", "FD"}
# pydicom's read path has the LUT descriptors' first value fixed up: left to it
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_CHARSETS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_BULK_BYTES = (dicomjson.BULK_DATA_THRESHOLD // 4) * 3  # pydicom's rule for InlineBinary
_INT_MAX = 2**31 - 1
_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E
_CHARSET_TAG = 0x00080005
_VALID_UID = re.compile(RE_VALID_UID)
_REQUEST_ATTRIBUTES = 0x00400275
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_MAX_DEPTH = 64  # as archive.structure: deeper is refused there
# Values read as text or numbers later (index facts, identity, the Image Pixel module): in any
# other VR (bytes, a sequence, DS's own number type) they would read otherwise there.
_TEXT_READ = frozenset(FACT_TAGS) | {
    int(tag_for_keyword(keyword) or 0)
    for keyword in (
        *(attribute for _, attribute in SEQUENCE_FACTS.values()),
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
        "SamplesPerPixel", "BitsStored", "PixelRepresentation", "PlanarConfiguration",
        "PhotometricInterpretation",
    )
}  # fmt: skip


class _GiveUp(Exception):
    """Not the common case: the pydicom path reads this part."""


@dataclass
class QuickRead:
    """What `archive.parse.read_received` and `archive.dicomjson.instance_json` would give."""

    parsed: ParsedInstance
    document: dict[str, Any]


class _Buffer:
    """The file's bytes from position `start`, read ahead in large pieces."""

    def __init__(self, handle: Any, size: int) -> None:
        self.handle = handle
        self.size = size
        self.start = 0
        self.data = handle.read(_HEAD)

    def take(self, position: int, count: int) -> bytes:
        end = position + count
        if end > self.size:
            raise _GiveUp  # truncated: the pydicom path says where
        if position < self.start or end > self.start + len(self.data):
            self.handle.seek(position)
            self.data = self.handle.read(max(count, _HEAD))
            self.start = position
        offset = position - self.start
        data: bytes = self.data[offset : offset + count]
        return data


def quick_read(path: Path) -> QuickRead | None:
    """The part read in one pass, or None when it is not the common case (or not valid)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            return _read(path, handle, size)
    except (_GiveUp, MalformedDataSet, OSError, ValueError, UnicodeDecodeError, struct.error):
        return None
    except Exception as error:  # a case not foreseen here: the pydicom path still reads it
        log.warning("one-pass read of %s failed, read with pydicom: %r", path.name, error)
        return None


@functools.cache
def _implicit_vr(tag: int) -> str:
    """The VR pydicom gives an Implicit VR element: the dictionary's, if it names one VR."""
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UL" if tag & 0xFFFF == 0 else ""  # a group length; else UN, with a warning
    return "" if " " in vr else vr  # "US or SS" and the like are pydicom's guess: given up


_IMPLICIT_HEAD = struct.Struct("<HHI").unpack  # group, element, length
_EXPLICIT_HEAD = struct.Struct("<HH2sH").unpack  # group, element, VR, short length
_LONG_LENGTH = struct.Struct("<I").unpack


@functools.cache
def _vr_name(raw: bytes) -> str | None:
    """The VR of two bytes read where one stands, or None where pydicom would switch to
    Implicit VR (each of the few pairs seen checked once)."""
    vr = raw.decode("latin_1")
    return vr if "AA" <= vr <= "ZZ" and vr.isalpha() and vr.isupper() else None


def _header(
    buffer: _Buffer, position: int, implicit: bool, head: bytes
) -> tuple[int, str, int, int]:
    """Tag, VR, value length and value offset of the element at `position`, whose first
    eight bytes are `head`.

    In Implicit VR the VR is the dictionary's; "" for a private tag, an unknown one or one
    of several VRs (the pixel data's among them), which only the pixel data may be.
    """
    if implicit:
        group, element, length = _IMPLICIT_HEAD(head)
        tag = group << 16 | element
        return tag, "" if group & 1 else _implicit_vr(tag), length, position + 8
    group, element, raw_vr, length = _EXPLICIT_HEAD(head)
    vr = _vr_name(raw_vr)
    if vr is None:
        raise _GiveUp  # pydicom would switch to implicit VR
    if vr in _LONG_VRS:
        if length:
            raise _GiveUp
        length = _LONG_LENGTH(buffer.take(position + 8, 4))[0]
        return group << 16 | element, vr, length, position + 12
    return group << 16 | element, vr, length, position + 8


_Values = dict[int, tuple[str, Any]]  # tag -> (VR, converted value; for SQ, each item's)


class _DataSet:
    """The walk: elements to DICOM JSON and values, sequences at any depth, checked as walked."""

    def __init__(self, buffer: _Buffer, implicit: bool) -> None:
        self.buffer = buffer
        self.implicit = implicit
        self.charset = "latin_1"
        self.bulk: list[tuple[dict[str, Any], str]] = []  # (JSON entry, its path) for a URI
        self.pixel: tuple[int, str, int, int] | None = None

    def elements(
        self, position: int, end: int | None, depth: int, path: str
    ) -> tuple[dict[str, Any], _Values, int]:
        """The top level (`depth` 0, to the pixel data or the end), or one item's elements
        (to `end`, or to its delimiter when `end` is None); where they stop."""
        if depth > _MAX_DEPTH:
            raise _GiveUp
        buffer, top = self.buffer, depth == 0
        document: dict[str, Any] = {}
        values: _Values = {}
        previous = 0x0002FFFF if top else -1
        while True:
            if end is not None and position >= end:
                if position > end:
                    raise _GiveUp
                return document, values, position
            if top and position >= buffer.size:
                return document, values, position
            head = buffer.take(position, 8)  # every element's header is as long, at least
            if head[:2] == b"\xfe\xff":  # group FFFE
                if head[2:4] == b"\x0d\xe0" and end is None and not top:  # item delimiter
                    return document, values, position + 8
                raise _GiveUp
            tag, vr, length, offset = _header(buffer, position, self.implicit, head)
            if tag <= previous:
                raise _GiveUp  # out of order or repeated: as pydicom reads it
            previous = tag
            if top and tag in PIXEL_DATA_TAGS:
                self.pixel = (tag, vr, length, offset)
                return document, values, offset
            if length != UNDEFINED_LENGTH and end is not None and offset + length > end:
                raise _GiveUp
            key = f"{tag:08X}"
            if vr == "SQ":
                if (
                    tag < _CHARSET_TAG
                    or tag in _TEXT_READ
                    or (tag == _REQUEST_ATTRIBUTES and not top)
                ):
                    raise _GiveUp
                items, position = self.items(offset, length, depth + 1, f"{path}{key}/")
                entries = [item for item, _ in items]
                document[key] = {"vr": "SQ", "Value": entries} if entries else {"vr": "SQ"}
                values[tag] = ("SQ", [item for _, item in items])
                continue
            if length == UNDEFINED_LENGTH or vr not in _CONVERTED or tag in _LUT_DESCRIPTORS:
                raise _GiveUp
            if tag == _REQUEST_ATTRIBUTES or (tag in _TEXT_READ and vr not in _TEXT_VRS):
                raise _GiveUp  # read as text by archive.facts or archive.pixel_module
            if vr in _BINARY:
                entry: dict[str, Any] = {"vr": vr}
                if length > _BULK_BYTES:
                    if offset + length > buffer.size:
                        raise _GiveUp
                    self.bulk.append((entry, f"{path}{key}"))
                else:
                    raw = buffer.take(offset, length)
                    if raw:
                        entry["InlineBinary"] = base64.b64encode(raw).decode("ascii")
                document[key] = entry
            else:
                raw = buffer.take(offset, length)
                if tag < _CHARSET_TAG and vr in _CHARSET_VRS:
                    raise _GiveUp  # decoded with a character set not read yet
                if tag == _CHARSET_TAG:
                    if not top:
                        raise _GiveUp  # an item's own character set
                    self.charset = _charset(raw)
                value, entry = _text_element(vr, raw, self.charset)
                values[tag] = (vr, value)
                document[key] = entry
            position = offset + length

    def items(
        self, position: int, length: int, depth: int, path: str
    ) -> tuple[list[tuple[dict[str, Any], _Values]], int]:
        """A sequence's items, of defined or undefined length; where the sequence ends."""
        buffer = self.buffer
        end = None if length == UNDEFINED_LENGTH else position + length
        if end is not None and end > buffer.size:
            raise _GiveUp
        items: list[tuple[dict[str, Any], _Values]] = []
        while end is None or position < end:
            tag, item_length = struct.unpack("<II", buffer.take(position, 8))
            tag = (tag & 0xFFFF) << 16 | tag >> 16  # group first, as read: (FFFE,E000)
            if tag == _SEQUENCE_DELIMITER and end is None:
                return items, position + 8
            if tag != _ITEM:
                raise _GiveUp
            item_end = None if item_length == UNDEFINED_LENGTH else position + 8 + item_length
            if item_end is not None and end is not None and item_end > end:
                raise _GiveUp
            path_of_item = f"{path}{len(items)}/"
            document, values, position = self.elements(position + 8, item_end, depth, path_of_item)
            items.append((document, values))
        if end is not None and position > end:
            raise _GiveUp
        return items, position


def _read(path: Path, handle: Any, size: int) -> QuickRead:
    buffer = _Buffer(handle, size)
    if buffer.take(128, 4) != b"DICM":
        raise _GiveUp
    position, syntax = _meta(buffer, 132)
    implicit = syntax == ImplicitVRLittleEndian
    if not (implicit or syntax == ExplicitVRLittleEndian or _encapsulated_explicit_little(syntax)):
        raise _GiveUp
    if implicit and position + 6 <= size:
        head = buffer.take(position, 6)
        if all(0x40 < byte < 0x5B for byte in head[4:6]):
            raise _GiveUp  # pydicom (and archive.structure) would read it as Explicit VR
    walk = _DataSet(buffer, implicit)
    document, values, _ = walk.elements(position, None, 0, "")
    pixel_vr = _check_pixels(path, handle, size, values, walk.pixel, implicit)
    identity = [_uid(values, tag) for tag in (_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES)]
    sop_class, sop_instance, study, series = identity
    prefix = dicomjson.BASE_PLACEHOLDER + dicomjson.instance_path(study, series, sop_instance)
    for entry, key in walk.bulk:
        entry["BulkDataURI"] = f"{prefix}/bulk/{key}"
    facts = {keyword: _fact(values.get(tag)) for tag, keyword in FACT_TAGS.items()}
    requested = values.get(_REQUEST_ATTRIBUTES)
    first: _Values = requested[1][0] if requested and requested[1] else {}
    for name, (_, keyword) in SEQUENCE_FACTS.items():
        facts[name] = _fact(first.get(int(tag_for_keyword(keyword) or 0)))
    parsed = ParsedInstance(
        path=path,
        dataset=None,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=syntax,
        pixel_vr=pixel_vr,
        size=size,
        facts=facts,
    )
    return QuickRead(parsed, dicomjson.finish_instance_json(document, prefix, pixel_vr))


def _meta(buffer: _Buffer, position: int) -> tuple[int, str]:
    """The File Meta group's end and its Transfer Syntax UID."""
    syntax = None
    while True:
        head = buffer.take(position, 8)
        if struct.unpack("<H", head[:2])[0] != 0x0002:
            break
        tag, vr, length, offset = _header(buffer, position, False, head)
        if length == UNDEFINED_LENGTH:
            raise _GiveUp
        if tag == 0x00020010:
            if vr != "UI":
                raise _GiveUp
            syntax = buffer.take(offset, length).decode("latin_1").rstrip("\0 ")
        position = offset + length
    if not syntax or "\\" in syntax:
        raise _GiveUp
    return position, syntax


def _encapsulated_explicit_little(syntax: str) -> bool:
    uid = UID(syntax)
    return (
        uid.is_transfer_syntax
        and uid.is_compressed
        and uid.is_little_endian
        and not uid.is_implicit_VR
        and not uid.is_deflated
    )


def _charset(raw: bytes) -> str:
    text = raw.decode("latin_1").rstrip(" \0")
    if text not in _CHARSETS:
        raise _GiveUp
    return _CHARSETS[text]


def _str_validator(vr: str) -> Callable[[str], bool] | None:
    """pydicom's validator of `vr` for a str value, without its layers of calls and messages.

    Only the validators whose rule for a str is its length and its pattern are taken apart
    (`validate_vr_length`, `validate_regex`; DA, DT and TM's `validate_date_time` checks a str
    as `validate_type_and_regex`); any other is called as pydicom has it.
    """
    validator: Callable[[str, Any], tuple[bool, str]] | None = VALIDATORS.get(vr)
    if validator is None:
        return None
    longest = MAX_VALUE_LEN.get(vr, 0)
    pattern = STR_VR_REGEXES.get(vr)

    def fits(item: str) -> bool:
        return not longest or len(item) <= longest

    def matches(item: str) -> bool:
        assert pattern is not None
        return not item or (pattern.match(item) is not None and item[-1] != "\n")

    if validator is validate_type_and_length:
        return fits
    if (validator is validate_type_and_regex or vr in _DATE_TIME_VRS) and pattern is not None:
        return matches  # a date or time validator takes a str as validate_type_and_regex
    if validator is validate_length_and_type_and_regex and pattern is not None:
        return lambda item: fits(item) and matches(item)
    checked = validator
    return lambda item: checked(vr, item)[0]


_STR_VALIDATORS = {vr: _str_validator(vr) for vr in VALIDATORS}


def _valid(vr: str, item: str) -> None:
    validator = _STR_VALIDATORS.get(vr)
    if validator is not None and not validator(item):
        raise _GiveUp  # pydicom would warn, and may read it otherwise


def _text_element(vr: str, raw: bytes, charset: str) -> tuple[Any, dict[str, Any]]:
    """The value and its DICOM JSON; short ones remembered, in new containers each time."""
    if not raw:
        return None, {"vr": vr}
    if len(raw) > _REMEMBERED_LENGTH:
        value = _convert(vr, raw, charset)
        return value, _json(vr, value)
    items, json_items = _remembered(vr, raw, charset)
    entry: dict[str, Any] = {"vr": vr}
    if json_items is not None:
        entry["Value"] = [dict(item) for item in json_items] if vr == "PN" else list(json_items)
    return list(items), entry


# Most values of an instance are those of the one before it in the series (names, dates,
# codes, spacing): their conversion and pydicom's checks run once per process.
_REMEMBERED_LENGTH = 64


@functools.lru_cache(maxsize=4096)
def _remembered(
    vr: str, raw: bytes, charset: str
) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    value = _convert(vr, raw, charset)
    entry = _json(vr, value)
    return tuple(value), tuple(entry["Value"]) if "Value" in entry else None


def _convert(vr: str, raw: bytes, charset: str) -> Any:
    """The value as pydicom holds it: a list of items (str, int, float), or bytes."""
    if vr in _NUMBERS:
        if len(raw) % _SIZES[vr]:
            raise _GiveUp
        return list(struct.unpack(f"<{len(raw) // _SIZES[vr]}{_NUMBERS[vr]}", raw))
    if b"\x1b" in raw:
        raise _GiveUp  # ISO 2022 escapes
    if vr in _CHARSET_VRS:
        if vr == "PN":
            raw = raw.rstrip(b"\x00 ")
        text = raw.decode(charset)  # strict: a bad byte is pydicom's warning, left to it
    else:
        text = raw.decode("latin_1")
    items: list[str]
    if vr in _SINGLE_VRS:
        _valid(vr, text)
        items = [text.rstrip("\0 ")]
    elif vr == "UR":
        items = [text.rstrip()]
        _valid(vr, items[0])
    elif vr == "AE":
        items = [item.strip() for item in text.split("\\")]
    elif vr == "PN":
        items = text.split("\\")
    elif vr == "DS":
        items = text.strip().rstrip(" \x00").split("\\")
    elif vr in _SPLIT_RSTRIP:
        items = text.rstrip(" \x00").split("\\")
    else:  # SH, LO, UC
        items = text.split("\\")
        for item in items:
            _valid(vr, item)
        items = [item.rstrip("\0 ") for item in items]
    if vr in ("PN", "DS", "IS", "UI", "AE", "CS", "AS", "DA", "DT", "TM"):
        for item in items:
            _valid(vr, item)
    return items


def _json(vr: str, value: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"vr": vr}
    if value is None or value == [""]:
        return entry  # empty: no Value
    if vr == "PN":
        names = []
        for item in value:
            groups = item.split("=")
            while groups and not groups[-1]:
                groups.pop()
            if not groups or len(groups) > 3:
                raise _GiveUp
            names.append(dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)))
        entry["Value"] = names
    elif vr == "DS":
        entry["Value"] = [_number(float, item) for item in value]
    elif vr == "IS":
        entry["Value"] = [_number(int, item) for item in value]
    else:
        entry["Value"] = list(value)
    return entry


def _number(kind: Callable[[str], Any], item: str) -> Any:
    if not item.strip():
        raise _GiveUp
    number = kind(item)
    if kind is int and not -_INT_MAX - 1 <= number <= _INT_MAX:
        raise _GiveUp
    return number


def _fact(found: tuple[str, Any] | None) -> str:
    """As `archive.facts.text` reads the pydicom value: items joined, a single one stripped."""
    if found is None or found[1] is None:
        return ""
    vr, value = found
    if vr == "PN":
        value = ["=".join(_groups(item)) for item in value]
    elif vr == "IS":
        value = [item.strip() for item in value]
    if len(value) == 1:
        return str(value[0]).strip()
    return "\\".join(str(item) for item in value)


def _groups(item: str) -> list[str]:
    groups = item.split("=")
    while groups and not groups[-1]:
        groups.pop()
    return groups


def _uid(values: dict[int, tuple[str, Any]], tag: int) -> str:
    found = values.get(tag)
    if found is None or found[0] != "UI" or not found[1] or len(found[1]) != 1:
        raise _GiveUp  # missing, empty or several: the pydicom path refuses it
    value = str(found[1][0]).strip()
    if not value or len(value) > 64 or _VALID_UID.match(value) is None:
        raise _GiveUp  # as pydicom's UID.is_valid
    return value


def _single_int(values: dict[int, tuple[str, Any]], tag: int, default: int | None) -> int:
    found = values.get(tag)
    if found is None or found[1] is None:
        if default is None:
            raise _GiveUp
        return default
    vr, value = found
    if len(value) != 1 or vr not in ("US", "UL", "IS"):
        raise _GiveUp
    return int(value[0])


def _check_pixels(
    path: Path,
    handle: Any,
    size: int,
    values: dict[int, tuple[str, Any]],
    pixel: tuple[int, str, int, int] | None,
    implicit: bool,
) -> str | None:
    """The pixel data's VR, once it is known whole and long enough; else give up."""
    if pixel is None:
        sop_class = values.get(_SOP_CLASS)
        if sop_class is None or sop_class[1] is None:
            raise _GiveUp
        if str(sop_class[1][0]).strip() in IMAGE_STORAGE_SOP_CLASSES:
            raise _GiveUp  # a refusal (or a Pixel Data Provider URL): the pydicom path
        return None
    tag, vr, length, offset = pixel
    if implicit:
        vr = ""  # archive.parse tells it from Bits Allocated, below
    elif vr not in ("OB", "OW", "OF", "OD"):
        raise _GiveUp
    walker = _Walker(_Source(handle, size))
    encoding = _Encoding(implicit, "<")
    handle.seek(offset)
    if length == UNDEFINED_LENGTH:
        if implicit or tag != 0x7FE00010 or vr not in ("OB", "OW"):
            raise _GiveUp
        walker.fragments(encoding, "PixelData")
    else:
        if offset + length > size:
            raise _GiveUp
        rows = _single_int(values, 0x00280010, None)
        columns = _single_int(values, 0x00280011, None)
        bits = _single_int(values, 0x00280100, None)
        samples = _single_int(values, 0x00280002, 1)
        frames = max(1, _single_int(values, 0x00280008, 1))
        if min(rows, columns, bits, samples) < 1:
            raise _GiveUp  # a refusal, or a value read otherwise: the pydicom path
        # YBR_FULL_422 needs less (archive.pixel_module): counting it in full only gives up more
        if length < (rows * columns * samples * bits * frames + 7) // 8:
            raise _GiveUp
        if implicit:
            vr = "OW" if bits > 8 else "OB"
        handle.seek(offset + length)
    walker.elements(encoding, end=None, depth=0)  # whatever follows, walked as before
    return vr
