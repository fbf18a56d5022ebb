"""The DICOMDIR of a File-set (PS3.10 Section 8, PS3.3 Annex F), built record by record.

pydicom's `FileSet` stages a copy of every instance on disk and looks each new one up among all
the others, so it takes seconds for a few hundred instances; a ZIP download knows its File IDs
already and only needs the directory. PATIENT, STUDY and SERIES records, and leaves other than
IMAGE, come from pydicom's `DIRECTORY_RECORDERS` (what each record type holds, PS3.3 F.5);
IMAGE records, the many, hold what pydicom's IMAGE recorder puts there (Instance Number) and are
encoded here, since pydicom's writer costs more per record than streaming the image does. The
records are ordered PATIENT → STUDY → SERIES → leaf and linked by byte offsets, as pydicom's
`FileSet.write` does: each record's length first, then the records with their offsets. Every
offset is an UL, so filling them in never changes a length.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import DIRECTORY_RECORDERS
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

_ITEM_HEADER = 8  # (FFFE,E000) and its length
_SEQUENCE_HEADER = 12  # explicit VR: tag, "SQ", two reserved bytes, length
# (0004,1220) Directory Record Sequence, undefined length, and its delimiter (PS3.5 7.5).
_SEQUENCE_START = struct.pack("<HH2sHI", 0x0004, 0x1220, b"SQ", 0, 0xFFFFFFFF)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_FIRST = "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"
_LAST = "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity"
_LEVELS = ("PATIENT", "STUDY", "SERIES")


@dataclass(frozen=True)
class Reference:
    """What a leaf record says of its file: the File ID's components and the SOP it holds."""

    file_id: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass
class ImageRecord:
    """An IMAGE record (PS3.3 F.5.8): Instance Number, Type 1, and the file it points at."""

    instance_number: str
    character_set: list[str] | None = None
    reference: Reference | None = None
    next_offset: int = 0


@dataclass
class _Node:
    record: Dataset | ImageRecord
    children: dict[str, _Node] = field(default_factory=dict)
    offset: int = 0


def _record(kind: str, header: Dataset) -> Dataset:
    """Raises ValueError when the header lacks a Type 1 attribute of the record."""
    record = DIRECTORY_RECORDERS[kind](header)
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    if "SpecificCharacterSet" in header:
        record.SpecificCharacterSet = header.SpecificCharacterSet
    return record


def leaf_record(kind: str, header: Dataset) -> Dataset:
    """A leaf other than IMAGE; ValueError when the header lacks one of its Type 1 values."""
    return _record(kind, header)


class Directory:
    """The records of a File-set, added one instance at a time; `encode` writes the DICOMDIR."""

    def __init__(self, file_set_id: str = "FERRY") -> None:
        self.file_set_id = file_set_id
        self._meta = FileMetaDataset()
        self._patients: dict[str, _Node] = {}

    def add(
        self,
        keys: tuple[str, str, str],
        header: Callable[[], Dataset],
        leaf: Callable[[], Dataset | ImageRecord],
        reference: Callable[[], Reference],
    ) -> Reference | None:
        """One instance: its PATIENT, STUDY and SERIES records if new (from `header()`, called
        only then), and its leaf pointing at `reference()`. None, and nothing added, when a
        record lacks a Type 1 value (PS3.3 F.5)."""
        try:
            made: list[Dataset | None] = []
            level: dict[str, _Node] | None = self._patients
            for key, kind in zip(keys, _LEVELS, strict=True):
                node = level.get(key) if level is not None else None
                made.append(None if node is not None else _record(kind, header()))
                level = node.children if node is not None else None
            record = leaf()
        except ValueError:
            return None
        where = reference()
        if isinstance(record, ImageRecord):
            record.reference = where
        else:
            record.ReferencedFileID = where.file_id.split("/")
            record.ReferencedSOPClassUIDInFile = where.sop_class_uid
            record.ReferencedSOPInstanceUIDInFile = where.sop_instance_uid
            record.ReferencedTransferSyntaxUIDInFile = where.transfer_syntax_uid
        level = self._patients
        for key, new in zip((*keys, where.file_id), (*made, record), strict=True):
            node = level[key] if new is None else level.setdefault(key, _Node(new))
            level = node.children
        return where

    def _walk(self) -> list[_Node]:
        order: list[_Node] = []

        def visit(level: dict[str, _Node]) -> None:
            for node in level.values():
                order.append(node)
                visit(node.children)

        visit(self._patients)
        return order

    def _link(self, start: int) -> None:
        """Each record's offset from the file's first byte, then the pointers between them."""
        offset = start
        for node in self._walk():
            node.offset = offset
            offset += _ITEM_HEADER + len(_encode(node.record))

        def link(level: dict[str, _Node]) -> None:
            nodes = list(level.values())
            for index, node in enumerate(nodes):
                following = nodes[index + 1].offset if index + 1 < len(nodes) else 0
                if isinstance(node.record, ImageRecord):
                    node.record.next_offset = following
                    continue
                node.record.OffsetOfTheNextDirectoryRecord = following
                children = list(node.children.values())
                node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
                    children[0].offset if children else 0
                )
                link(node.children)

        link(self._patients)

    def _head(self, first: int, last: int) -> bytes:
        """Preamble, File Meta Information and the elements before the record sequence."""
        dicomdir = Dataset()
        dicomdir.FileSetID = self.file_set_id
        setattr(dicomdir, _FIRST, first)
        setattr(dicomdir, _LAST, last)
        dicomdir.FileSetConsistencyFlag = 0
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, self._meta, enforce_standard=True)
        write_dataset(out, dicomdir)
        return bytes(out.getvalue())

    def encode(self, instance_uid: str | None = None) -> bytes:
        """The DICOMDIR file (Explicit VR Little Endian, as PS3.10 requires); the same records
        and `instance_uid` give the same bytes."""
        self._meta = FileMetaDataset()
        self._meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
        self._meta.MediaStorageSOPInstanceUID = (
            UID(instance_uid) if instance_uid else generate_uid()
        )
        self._meta.TransferSyntaxUID = ExplicitVRLittleEndian
        self._link(len(self._head(0, 0)) + _SEQUENCE_HEADER)
        roots = list(self._patients.values())
        head = self._head(roots[0].offset, roots[-1].offset) if roots else self._head(0, 0)
        parts = [head, _SEQUENCE_START]
        for node in self._walk():
            body = _encode(node.record)
            parts += [struct.pack("<HHI", 0xFFFE, 0xE000, len(body)), body]
        parts.append(_SEQUENCE_END)
        return b"".join(parts)


def _text(tag: int, vr: bytes, value: str, pad: bytes = b" ") -> bytes:
    """One Explicit VR Little Endian element of a short text VR (PS3.5 7.1.2, 6.2)."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += pad
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(data)) + data


def _encode_image(record: ImageRecord) -> bytes:
    """An IMAGE record's elements in tag order; every value is ASCII (CS, IS, UI)."""
    where = record.reference
    assert where is not None
    parts = [
        struct.pack("<HH2sHI", 0x0004, 0x1400, b"UL", 4, record.next_offset),
        struct.pack("<HH2sHH", 0x0004, 0x1410, b"US", 2, 0xFFFF),
        struct.pack("<HH2sHI", 0x0004, 0x1420, b"UL", 4, 0),
        _text(0x00041430, b"CS", "IMAGE"),
        _text(0x00041500, b"CS", "\\".join(where.file_id.split("/"))),
        _text(0x00041510, b"UI", where.sop_class_uid, b"\x00"),
        _text(0x00041511, b"UI", where.sop_instance_uid, b"\x00"),
        _text(0x00041512, b"UI", where.transfer_syntax_uid, b"\x00"),
    ]
    if record.character_set:
        parts.append(_text(0x00080005, b"CS", "\\".join(record.character_set)))
    parts.append(_text(0x00200013, b"IS", record.instance_number))
    return b"".join(parts)


def _encode(record: Dataset | ImageRecord) -> bytes:
    if isinstance(record, ImageRecord):
        return _encode_image(record)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, record)
    return bytes(out.getvalue())
