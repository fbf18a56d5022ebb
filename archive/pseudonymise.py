"""Pseudonymised copies of instances: PS3.15 Annex E, by a profile.

The Basic Application Level Confidentiality Profile's action for each attribute comes from the
standard's Table E.1-1 as the `dicom-anonymizer` package publishes it (its 2026c table, taken
as data: its own de-identifier draws random UIDs and works on the top level only). Ferry applies
the actions itself, at every level of nesting, and keyed: the same secret turns the same Patient
ID, UID or patient's dates into the same pseudonym every time, so that copies sent months apart
still belong to one pseudonymous patient, study and series, and nobody without the secret can
go back. A profile adds to the basic profile what a research or teaching use needs (PS3.15
E.3's options in Ferry's terms): attributes kept as they are, attributes removed or set to a
value, dates removed (the basic profile), shifted by a per-patient number of days (Retain
Longitudinal Temporal Information with Modified Dates) or kept (Full Dates), and private
attributes removed or kept.

An instance whose pixels carry burned-in annotation (Burned In Annotation "YES") is refused:
Ferry does not clean pixel data (the Clean Pixel Data option).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping
from copy import deepcopy as copy_of
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from foundation.errors import CannotPseudonymise

TABLE_VERSION = "PS3.15 2026c, Table E.1-1"
PATIENT_ID = Tag(0x0010, 0x0020)
PATIENT_NAME = Tag(0x0010, 0x0010)
_DATE_VRS = frozenset({"DA", "DT"})
_TIME_VRS = frozenset({"TM"})
_MAX_SHIFT_DAYS = 3650
_SHOWN_CHARS = 64


class Dates(StrEnum):
    REMOVE = "remove"  # the basic profile's action for each date and time
    SHIFT = "shift"  # every date moved back by the patient's own number of days; times kept
    KEEP = "keep"  # dates and times as they are


class PrivateTags(StrEnum):
    REMOVE = "remove"
    KEEP = "keep"


@dataclass(frozen=True)
class Profile:
    """What a copy keeps beyond the basic profile; tags as pydicom's `BaseTag`."""

    name: str
    keep: frozenset[BaseTag] = frozenset()
    remove: frozenset[BaseTag] = frozenset()
    replace: Mapping[BaseTag, str] = field(default_factory=dict)
    dates: Dates = Dates.REMOVE
    private_tags: PrivateTags = PrivateTags.REMOVE


BASIC = Profile("basic")


def tag_of(keyword: str) -> BaseTag:
    """The tag of a DICOM keyword (PatientSex) or of "(0010,0040)"/"00100040"; ValueError."""
    text = keyword.strip()
    number = tag_for_keyword(text)
    if number is not None:
        return Tag(number)
    digits = text.strip("()").replace(",", "")
    if len(digits) == 8:
        try:
            return Tag(int(digits, 16))
        except ValueError:
            pass
    raise ValueError(f"{text[:40]!r} is not a DICOM keyword or tag")


def name_of(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.elem:04X})"


# -- the standard's table -------------------------------------------------------------------

_Action = str  # "D", "Z", "X", "U", "K" (after resolving the table's alternatives)


def _standard_actions() -> tuple[dict[BaseTag, _Action], list[tuple[int, int, int, int, str]]]:
    """Single tags and masked groups (curves, overlays) with their action: where the table
    leaves a choice, the one that keeps an instance valid without knowing its IOD (Z/D and
    X/D and X/Z/D replace, X/Z empties, X/Z/U* cleans the sequence's items)."""
    groups = {
        "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "D",
        "X_Z_TAGS": "Z", "X_D_TAGS": "D", "X_Z_D_TAGS": "D", "X_Z_U_STAR_TAGS": "K",
    }  # fmt: skip
    single: dict[BaseTag, _Action] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for group, action in groups.items():
        for entry in getattr(table, group):
            if len(entry) == 4:
                masked.append((*entry, action))
            else:
                single[Tag(entry[0], entry[1])] = action
    return single, masked


_SINGLE, _MASKED = _standard_actions()


def standard_action(tag: BaseTag) -> _Action:
    """The basic profile's action for a tag: K (keep) where the table names none."""
    found = _SINGLE.get(tag)
    if found is not None:
        return found
    for group, elem, group_mask, elem_mask, action in _MASKED:
        if (
            tag.group & group_mask == group & group_mask
            and tag.elem & elem_mask == elem & elem_mask
        ):
            return action
    return "K"


# -- keyed pseudonyms -----------------------------------------------------------------------


def _digest(secret: bytes, kind: str, value: str) -> bytes:
    return hmac.new(secret, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()


def pseudonym(secret: bytes, patient_id: str) -> str:
    """The Patient ID a patient has in every copy made with this secret."""
    return "PSN" + _digest(secret, "patient", patient_id).hex()[:16].upper()


def new_uid(secret: bytes, uid: str) -> str:
    """A UID in the 2.25 root (PS3.5 B.2) from a keyed hash, with a UUID's version 8 bits."""
    raw = bytearray(_digest(secret, "uid", uid)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(raw, 'big')}"


def shift_days(secret: bytes, patient_id: str) -> int:
    """How many days this patient's dates move back: 1 to 3650, the same in every copy."""
    return 1 + int.from_bytes(_digest(secret, "days", patient_id)[:4], "big") % _MAX_SHIFT_DAYS


def _shift_date(value: str, days: int) -> str:
    try:
        moved = dt.datetime.strptime(value[:8], "%Y%m%d") - dt.timedelta(days=days)
    except ValueError:
        return ""  # not a date: nothing of it is kept
    return moved.strftime("%Y%m%d") + value[8:]


# -- applying a profile ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    profile: Profile
    secret: bytes
    patient_id: str

    def uid(self, value: str) -> str:
        return new_uid(self.secret, value) if value else value


def _dummy(element: DataElement) -> object:
    """A value that is not the original's and fits the VR (action D)."""
    vr = element.VR
    if vr in ("DA", "DT"):
        return "19000101" if vr == "DA" else "19000101000000"
    if vr == "TM":
        return "000000"
    if vr in ("DS", "IS"):
        return "0"
    if vr in ("FD", "FL", "SS", "US", "SL", "UL", "SV", "UV"):
        return 0
    if vr == "AS":
        return "000Y"
    if vr == "UR":
        return "http://removed.invalid"
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x00\x00"
    if vr == "SQ":
        return DicomSequence([])
    return "REMOVED"


def _date_action(run: _Run, element: DataElement) -> Callable[[], object] | None:
    """What a date or time becomes when the profile keeps or shifts dates; None: the table."""
    dates = run.profile.dates
    if element.VR not in _DATE_VRS | _TIME_VRS or dates == Dates.REMOVE:
        return None
    if dates == Dates.KEEP or element.VR in _TIME_VRS:
        return lambda: element.value
    days = shift_days(run.secret, run.patient_id)
    values = element.value if element.VM > 1 else [element.value]
    moved = [_shift_date(str(v), days) for v in values if v]
    return lambda: moved if element.VM > 1 else (moved[0] if moved else "")


def _clean(dataset: Dataset, run: _Run) -> None:
    profile = run.profile
    for tag in sorted(dataset.keys()):
        element = dataset[tag]
        if tag.is_private and profile.private_tags == PrivateTags.REMOVE:
            del dataset[tag]
            continue
        if tag in profile.remove:
            del dataset[tag]
            continue
        if tag in profile.replace:
            element.value = profile.replace[tag]
            continue
        if tag in (PATIENT_ID, PATIENT_NAME):
            element.value = pseudonym(run.secret, run.patient_id) if run.patient_id else ""
            continue
        if tag in profile.keep:
            continue
        action = "K" if tag.is_private else standard_action(tag)
        if action == "D" and element.VR == "UI":  # a dummy UID is still a UID: the keyed one
            action = "U"
        if action != "K" and element.VR != "SQ":
            dated = _date_action(run, element)
            if dated is not None:
                element.value = dated()
                continue
        if action == "X":
            del dataset[tag]
        elif action == "Z":
            element.value = DicomSequence([]) if element.VR == "SQ" else None
        elif action == "D":
            element.value = _dummy(element)
        elif action == "U":
            if element.VM > 1:
                element.value = [run.uid(str(v)) for v in element.value]
            else:
                element.value = run.uid(str(element.value or ""))
        elif element.VR == "SQ":  # kept (or X/Z/U*): its items are cleaned in turn
            for item in element.value:
                _clean(item, run)


def _mark(dataset: Dataset, profile: Profile) -> None:
    """PS3.15 E.1.1: say that, and how, the copy was de-identified."""
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = f"Ferry pseudonymisation, profile {profile.name}"[:64]
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if profile.dates == Dates.SHIFT:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    elif profile.dates == Dates.KEEP:
        codes.append(("113106", "Retain Longitudinal Temporal Information Full Dates Option"))
    if profile.private_tags == PrivateTags.KEEP:
        codes.append(("113111", "Retain Safe Private Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = items
    dataset.LongitudinalTemporalInformationModified = {
        Dates.REMOVE: "REMOVED", Dates.SHIFT: "MODIFIED", Dates.KEEP: "UNMODIFIED"
    }[profile.dates]  # fmt: skip


def pseudonymise_dataset(dataset: Dataset, profile: Profile, secret: bytes) -> Dataset:
    """The dataset pseudonymised in place (and returned); refused for burned-in text."""
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        raise CannotPseudonymise(
            "burned-in annotation: Ferry does not clean pixel data, so it makes no copy"
        )
    run = _Run(profile, secret, str(dataset.get("PatientID", "") or ""))
    _clean(dataset, run)
    for tag, value in profile.replace.items():  # set where present; added at the top level
        if tag not in dataset:
            dataset.add_new(tag, dictionary_VR(tag), value)
    _mark(dataset, profile)
    return dataset


What = Literal["kept", "changed", "emptied", "removed", "added"]


@dataclass(frozen=True)
class Change:
    """One top-level attribute of an instance and of its copy, as text (for a person to read)."""

    tag: str  # "(0010,0020)"
    keyword: str
    before: str | None  # None: absent
    after: str | None

    @property
    def what(self) -> What:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        if self.after == self.before:
            return "kept"
        return "emptied" if self.after == "" else "changed"


def _shown(element: DataElement) -> str:
    if element.VR == "SQ":
        return f"{len(element.value)} item(s)"
    if element.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return f"{len(element.value or b'')} bytes"
    return str(element.value if element.value is not None else "")[:_SHOWN_CHARS]


def preview(source: Path | IO[bytes], profile: Profile, secret: bytes) -> list[Change]:
    """What a copy of this instance would hold, attribute by attribute, against the instance
    (top level; pixel data not read). Raises as `pseudonymise_dataset` does."""
    original = dcmread(source, stop_before_pixels=True)
    copy = pseudonymise_dataset(copy_of(original), profile, secret)
    tags = sorted(set(original.keys()) | set(copy.keys()))
    changes = []
    for tag in tags:
        before, after = original.get(tag), copy.get(tag)
        changes.append(Change(
            f"({tag.group:04X},{tag.elem:04X})", name_of(tag),
            None if before is None else _shown(before), None if after is None else _shown(after),
        ))  # fmt: skip
    return changes


def pseudonymise_file(
    source: Path | IO[bytes], target: Path | IO[bytes], profile: Profile, secret: bytes
) -> str:
    """A Part 10 file's pseudonymised copy written to `target`, its encoding kept; the copy's
    Study Instance UID. The attributes are read and written by pydicom, the pixel data copied
    as it is stored, a chunk at a time, after them (never the frames in memory). Anything after
    the pixel data at the top level (Digital Signatures, padding) is left out. A deflated or
    big-endian data set, which cannot be copied so, is read whole."""
    with contextlib.ExitStack() as stack:
        reader = source if not isinstance(source, Path) else stack.enter_context(source.open("rb"))
        writer = target if not isinstance(target, Path) else stack.enter_context(target.open("wb"))
        start = reader.tell()
        header = dcmread(reader, stop_before_pixels=True)
        pixels_at = reader.tell()
        syntax = UID(header.file_meta.TransferSyntaxUID)
        if syntax.is_deflated or not syntax.is_little_endian:
            reader.seek(start)
            whole = dcmread(reader)
            _write(whole, writer, profile, secret)
            return str(whole.StudyInstanceUID)
        image = "Rows" in header  # an image without its pixels is no copy of it
        _write(header, writer, profile, secret)
        reader.seek(pixels_at)
        copied = _copy_pixel_elements(reader, writer, implicit=syntax.is_implicit_VR)
        if image and not copied:
            raise ValueError("the image's pixel data cannot be read")
        return str(header.StudyInstanceUID)


def _write(dataset: Dataset, writer: IO[bytes], profile: Profile, secret: bytes) -> None:
    pseudonymise_dataset(dataset, profile, secret)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    dataset.file_meta = meta
    dataset.save_as(writer, enforce_file_format=True)


_PIXEL_GROUP = 0x7FE0
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_UNDEFINED = 0xFFFFFFFF
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_CHUNK = 1 << 20


def _copy_pixel_elements(reader: IO[bytes], writer: IO[bytes], *, implicit: bool) -> int:
    """The top level's group 7FE0 elements (Float, Double Float, Pixel Data) byte for byte:
    a defined length in chunks, an undefined one (encapsulated) fragment by fragment. Returns
    how many were copied."""
    copied = 0
    while True:
        head = reader.read(8)
        if not head:
            return copied
        if len(head) < 8:
            raise ValueError("pixel data cut short: an element header")
        group, _element = struct.unpack("<HH", head[:4])
        if group != _PIXEL_GROUP:
            return copied
        copied += 1
        if implicit:
            (length,) = struct.unpack("<L", head[4:])
        elif head[4:6] in _LONG_VRS:
            extra = reader.read(4)
            if len(extra) < 4:
                raise ValueError("pixel data cut short: an element header")
            head += extra
            (length,) = struct.unpack("<L", extra)
        else:
            (length,) = struct.unpack("<H", head[6:])
        writer.write(head)
        if length != _UNDEFINED:
            _copy_bytes(reader, writer, length)
            continue
        while True:  # items, then the sequence delimiter
            item = reader.read(8)
            if len(item) < 8:
                raise ValueError("pixel data cut short: no sequence delimiter")
            writer.write(item)
            tag_group, tag_element, item_length = struct.unpack("<HHL", item)
            if (tag_group, tag_element) == _SEQUENCE_END:
                break
            _copy_bytes(reader, writer, item_length)


def _copy_bytes(reader: IO[bytes], writer: IO[bytes], length: int) -> None:
    left = length
    while left:
        chunk = reader.read(min(left, _CHUNK))
        if not chunk:
            raise ValueError("pixel data cut short")
        writer.write(chunk)
        left -= len(chunk)
