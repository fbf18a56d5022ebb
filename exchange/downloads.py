"""Downloading studies to the desktop: a streamed ZIP of DICOM files with a DICOMDIR (PS3.10).

The ZIP is written by `zipfile` into a small buffer that is emptied after every write, with its
members stored (ZIP_STORED: DICOM pixel data rarely compresses and the files stay byte for byte
what was received) and data descriptors, since the stream cannot seek back. Blobs are read in
chunks, so memory stays flat whatever the study's size. The DICOMDIR needs only each instance's
header, which the index already holds (its DICOM JSON): pydicom's FileSet builds it from
header-only datasets, before the first blob is read.

If a blob disappears while streaming (the study was deleted halfway), the generator raises: the
HTTP edge then drops the connection before the ZIP's central directory, so the client sees a
truncated download, never a "complete" but corrupt archive.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import UID, ExplicitVRLittleEndian

from archive.store import Archive, StoredInstance

DICOMDIR = "DICOMDIR"
FLUSH_BYTES = 1024 * 1024
_ZIP64_LIMIT = (1 << 31) - 1
# What the PATIENT, STUDY, SERIES and IMAGE directory records take (PS3.3 F.5).
_RECORD_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "StudyID",
    "AccessionNumber",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "ContentDate",
    "ContentTime",
)


@dataclass(frozen=True)
class ZipPlan:
    """The DICOMDIR's bytes, and each instance with its File ID path inside the ZIP."""

    dicomdir: bytes
    members: tuple[tuple[str, StoredInstance], ...]


class _Sink:
    """An append-only, non-seekable file for zipfile; `take` hands out what was written."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _header(document: bytes, instance: StoredInstance) -> Dataset:
    """The record attributes of one instance, from its stored DICOM JSON (no bulk data)."""
    full = Dataset.from_json(orjson.loads(document), bulk_data_uri_handler=lambda *_: b"")
    header = Dataset()
    for keyword in _RECORD_KEYWORDS:
        if keyword in full:
            setattr(header, keyword, full[keyword].value)
    header.SOPInstanceUID = instance.sop_instance_uid
    header.SOPClassUID = instance.sop_class_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(instance.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(instance.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the header file; the record says the real one
    header.file_meta = meta
    return header


def plan_zip(archive: Archive, study_uids: Sequence[str]) -> ZipPlan:
    """Raises StudyNotFound if a study is not in the archive (before anything is sent)."""
    instances: list[tuple[StoredInstance, bytes]] = []
    for uid in study_uids:
        stored = archive.find_instances(uid)
        instances.extend(zip(stored, archive.read_metadata(uid), strict=True))
    with tempfile.TemporaryDirectory(prefix="ferry-dicomdir-") as folder:
        fileset = FileSet()
        fileset.ID = "FERRY"
        others: list[tuple[str, StoredInstance]] = []
        by_uid: dict[str, StoredInstance] = {}
        for instance, document in instances:
            header = _header(document, instance)
            header.file_meta.TransferSyntaxUID = UID(instance.transfer_syntax_uid)
            try:
                fileset.add(header)
                by_uid[instance.sop_instance_uid] = instance
            except ValueError:  # a SOP class without a directory record type
                others.append((f"OTHER/{len(others):06d}", instance))
        fileset.write(Path(folder))
        dicomdir = (Path(folder) / DICOMDIR).read_bytes()
        members = [(Path(item.FileID).as_posix(), by_uid[item.SOPInstanceUID]) for item in fileset]
    return ZipPlan(dicomdir, tuple(sorted(members) + others))


def iter_zip(archive: Archive, plan: ZipPlan, now: datetime | None = None) -> Iterator[bytes]:
    """The ZIP, in pieces of about a MiB."""
    stamp = (now or datetime.now(UTC)).timetuple()[:6]
    sink = _Sink()
    archive_file = zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True)
    archive_file.writestr(zipfile.ZipInfo(DICOMDIR, stamp), plan.dicomdir)
    yield sink.take()
    for name, instance in plan.members:
        info = zipfile.ZipInfo(name, stamp)
        info.file_size = instance.size
        with archive_file.open(info, "w", force_zip64=instance.size > _ZIP64_LIMIT) as member:
            for chunk in archive.blobs.iter_chunks(instance.blob_key):
                member.write(chunk)
                if len(sink.buffer) >= FLUSH_BYTES:
                    yield sink.take()
        yield sink.take()
    archive_file.close()
    yield sink.take()
