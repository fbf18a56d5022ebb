"""Reading a received instance: checks, identity, and a file meta header where one is missing."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from archive import outcomes
from archive.completeness import Incomplete, check_complete
from archive.facts import facts_of

IMPLEMENTATION_CLASS_UID = generate_uid(prefix=None, entropy_srcs=["Ferry DICOM exchange"])
IMPLEMENTATION_VERSION_NAME = "FERRY_0_1"
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class InvalidInstance(Exception):
    """A received part that cannot be stored; carries the STOW failure reason."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ParsedInstance:
    path: Path
    dataset: Dataset | None  # None when read without pydicom (archive.quickread)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    pixel_vr: str | None
    size: int
    facts: dict[str, str] = field(default_factory=dict)  # archive.facts: the index's text


def _read_dataset(path: Path) -> Dataset:
    """Everything before the pixel data; the rest is walked, not parsed (archive.completeness)."""
    with path.open("rb") as handle:
        try:
            return dcmread(handle, stop_before_pixels=True, force=True)
        except Exception as error:  # pydicom raises many types on hostile bytes
            raise InvalidInstance(
                outcomes.CANNOT_UNDERSTAND, f"not a DICOM file: {error}"
            ) from None


def _check_complete(path: Path, dataset: Dataset, size: int) -> str | None:
    """The whole data set walked and its pixels checked against its SOP class; the pixel VR."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    with path.open("rb") as handle:
        try:
            found = check_complete(handle, size, dataset, str(syntax) if syntax else None)
        except Incomplete as error:
            raise InvalidInstance(error.reason, error.message) from None
    if found.pixel is None or found.pixel.vr in ("OB", "OW", "OF", "OD"):
        return found.pixel_vr
    return "OW" if int(dataset.get("BitsAllocated", 16) or 16) > 8 else "OB"


def _identity(dataset: Dataset) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword in _REQUIRED_UIDS:
        try:
            value = str(dataset.get(keyword, "") or "").strip()
        except Exception:  # a value pydicom cannot decode at all
            value = ""
        if not value:
            raise InvalidInstance(
                outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is missing"
            )
        if not UID(value).is_valid:
            raise InvalidInstance(
                outcomes.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} {value[:80]!r} is not a UID"
            )
        values[keyword] = value
    return values


def _add_file_meta(path: Path, dataset: Dataset, identity: dict[str, str]) -> Path:
    """A bare dataset (no preamble, no meta) gets a correct header in front of its own bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(identity["SOPClassUID"])
    meta.MediaStorageSOPInstanceUID = UID(identity["SOPInstanceUID"])
    implicit, little = dataset.original_encoding
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian
        if implicit
        else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=True)
    dataset.file_meta = meta
    return _prepend(path, header.getvalue())


def _prepend(path: Path, meta: bytes) -> Path:
    """Preamble, prefix and (if given) a meta group ahead of the received bytes, unchanged."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".meta-")
    with os.fdopen(fd, "wb") as target, path.open("rb") as source:
        target.write(b"\x00" * 128 + b"DICM" + meta)
        while chunk := source.read(1024 * 1024):
            target.write(chunk)
    path.unlink()
    return Path(name)


def read_received(path: Path) -> ParsedInstance:
    """Parse a spooled part; raises InvalidInstance with the reason to report."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidInstance(outcomes.CANNOT_UNDERSTAND, "empty part")
    dataset = _read_dataset(path)
    identity = _identity(dataset)
    pixel_vr = _check_complete(path, dataset, size)
    has_preamble = getattr(dataset, "preamble", None) is not None
    meta = getattr(dataset, "file_meta", None)
    facts = facts_of(dataset)
    if meta is None or "TransferSyntaxUID" not in meta:
        path = _add_file_meta(path, dataset, identity)
        size = path.stat().st_size
    elif not has_preamble:
        path = _prepend(path, b"")
        size = path.stat().st_size
    return ParsedInstance(
        path=path,
        dataset=dataset,
        sop_class_uid=identity["SOPClassUID"],
        sop_instance_uid=identity["SOPInstanceUID"],
        study_instance_uid=identity["StudyInstanceUID"],
        series_instance_uid=identity["SeriesInstanceUID"],
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        pixel_vr=pixel_vr,
        size=size,
        facts=facts,
    )
