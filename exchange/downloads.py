"""Downloading studies to the desktop: a ZIP of DICOM files with a DICOMDIR (PS3.10), streamed
and resumable.

The ZIP is planned to its last byte before anything is sent: its members are stored (DICOM pixel
data rarely compresses, and the files stay byte for byte what was received), in the index's
order, with one time stamp, and each instance's size is in the index; so the archive's length,
every member's place and its bytes are the same whenever the same selection is asked for. The
ETag names exactly that: the members' names, sizes and blobs and the DICOMDIR's bytes. A range
of the ZIP (`_stored_zip`) skips the members before it, starts inside the one it begins in, and
takes the CRC-32s its descriptors and central directory need from the index (`instance.crc32`);
one the index does not know yet is worked out from the blob (read from disk, without sending it
when it lies before the range) and kept there, so the next download reads no blob for it. With
every CRC known, `ZipDownload.pieces` gives the members' data as spans of their blobs, which
the HTTP edge sends from the files (`os.sendfile`). Blobs are read in chunks: memory holds the
plan (a few hundred bytes per instance), never a study.

The DICOMDIR is the last member. Its records need only each instance's header, which the index
already holds (its DICOM JSON): no blob is opened for them, and `_dicomdir.Directory` writes the
directory while the ZIP is planned. An instance whose header lacks a record's Type 1 attribute
(PS3.3 F.5), or whose SOP class has no four-level record type, is still in the ZIP, under
`OTHER/`, and left out of the DICOMDIR.

If a blob disappears or changes while streaming (the study was deleted halfway), the generator
raises: the HTTP edge then drops the connection before the ZIP's central directory, so the
client sees a truncated download, never a "complete" but corrupt archive.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import orjson
from pydicom.dataset import Dataset
from pydicom.fileset import _four_level_record_type  # the leaf record type pydicom would use
from sqlalchemy.exc import SQLAlchemyError

from archive.store import Archive, StoredInstance
from exchange._dicomdir import Directory, ImageRecord, Reference, leaf_record
from exchange._stored_zip import (
    DataSpan,
    MemberChanged,
    ZipLayout,
    crcs_needed,
    iter_zip_pieces,
    iter_zip_range,
)
from foundation.weighted_lru import WeightedLRU

__all__ = ["DataSpan", "MemberChanged", "ZipDownload", "iter_zip", "plan_zip", "prepare_zip"]
log = logging.getLogger(__name__)
DICOMDIR = "DICOMDIR"
FLUSH_BYTES = 1024 * 1024
REMEMBER_BATCH = 64  # CRCs learnt by a download go into the index this many at a time
FORMAT = b"ferry-zip-1"  # changes whenever the same selection would give other bytes
_PREFIXES = {"IMAGE": "IM", "RT DOSE": "RD", "RT STRUCTURE SET": "RS", "RT PLAN": "RP",
             "RT TREAT RECORD": "RX", "PRESENTATION": "PR", "WAVEFORM": "WV",
             "SR DOCUMENT": "SR", "KEY OBJECT DOC": "KY", "SPECTROSCOPY": "SP",
             "RAW DATA": "RW", "REGISTRATION": "RG", "FIDUCIAL": "FD", "ENCAP DOC": "ED",
             "VALUE MAP": "VM", "STEREOMETRIC": "SX", "SURFACE": "SF", "MEASUREMENT": "MS",
             "PLAN": "PL", "SURFACE SCAN": "SS", "RADIOTHERAPY": "RT", "TRACT": "TR",
             "ASSESSMENT": "AS"}  # fmt: skip
# The attributes the PATIENT, STUDY, SERIES and IMAGE records take (PS3.3 F.5), and those that
# say the leaf is not an IMAGE; any other leaf reads the whole (bulk-data-free) header.
_RECORD_TAGS = frozenset(
    {"00080005", "00080016", "00080018", "00080020", "00080030", "00080050", "00080060",
     "00081030", "00100010", "00100020", "0020000D", "0020000E", "00200010", "00200011",
     "00200013", "300A0002", "00420011"}
)  # fmt: skip


@dataclass(frozen=True)
class ZipPlan:
    """What goes into the ZIP: each series' instances, in the index's order."""

    series: tuple[tuple[StoredInstance, ...], ...]


def plan_zip(archive: Archive, study_uids: Sequence[str]) -> ZipPlan:
    """Raises StudyNotFound if a study is not in the archive (before anything is sent)."""
    series: list[tuple[StoredInstance, ...]] = []
    for uid in study_uids:
        instances = archive.find_instances(uid)
        for _, members in groupby(instances, key=lambda i: i.series_instance_uid):
            series.append(tuple(members))
    return ZipPlan(tuple(series))


def _value(element: dict[str, Any]) -> object:
    """A DICOM JSON value (PS3.18 F.2) as pydicom takes it, for the short text VRs and PN."""
    values = element.get("Value") or []
    if element.get("vr") == "PN":
        values = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in values]
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _header(element: dict[str, dict[str, Any]], everything: bool = False) -> Dataset:
    """The attributes directory records take, straight from the instance's DICOM JSON."""
    if everything:  # a leaf other than IMAGE: pydicom reads the whole (bulk-data-free) header
        kept = {tag: v for tag, v in element.items() if "BulkDataURI" not in v}
        return Dataset.from_json(kept)
    header = Dataset()
    for tag in _RECORD_TAGS & element.keys():
        header.add_new(int(tag, 16), element[tag].get("vr", "UN"), _value(element[tag]))
    return header


@dataclass(frozen=True)
class _Instance:
    """One instance's DICOM JSON, read for its directory records."""

    element: dict[str, dict[str, Any]]

    def text(self, tag: str) -> str:
        value = _value(self.element.get(tag, {}))
        return "" if value is None else str(value)

    def leaf_kind(self, kinds: dict[tuple[str, str, bool, bool], str]) -> str:
        """The leaf record type pydicom would give it, worked out once per kind of instance."""
        facts = (self.text("00080016"), self.text("00080060"),
                 "300A0002" in self.element, "00420011" in self.element)  # fmt: skip
        if facts not in kinds:
            kinds[facts] = _four_level_record_type(_header(self.element))
        return kinds[facts]

    def image(self) -> ImageRecord:
        number = _value(self.element.get("00200013", {}))
        if not isinstance(number, int) or not -(2**31) <= number < 2**31:
            raise ValueError("an IMAGE record needs an Instance Number (PS3.3 F.5)")
        charset = _value(self.element.get("00080005", {}))
        characters = None if charset is None else [charset] if isinstance(charset, str) else charset
        return ImageRecord(str(number), characters)  # type: ignore[arg-type]


def _read_instances(archive: Archive, series: Sequence[StoredInstance]) -> dict[str, _Instance]:
    """Each instance's DICOM JSON from the index, by SOP Instance UID (no blob is opened)."""
    first = series[0]
    found: dict[str, _Instance] = {}
    for document in archive.read_metadata(first.study_instance_uid, first.series_instance_uid):
        instance = _Instance(orjson.loads(document))
        found[instance.text("00080018")] = instance
    return found


class _Names:
    """File IDs as pydicom's FileSet gives them: PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn."""

    def __init__(self) -> None:
        self.levels: tuple[dict[str, str], ...] = ({}, {}, {})
        self.leaves = 0
        self.others = 0

    def other(self) -> str:
        self.others += 1
        return f"OTHER/{self.others - 1:06d}"

    def file_id(self, keys: tuple[str, str, str], leaf: str) -> str:
        parts = [
            names.setdefault(key, f"{prefix}{len(names):06d}")
            for names, key, prefix in zip(self.levels, keys, ("PT", "ST", "SE"), strict=True)
        ]
        self.leaves += 1
        return "/".join([*parts, f"{_PREFIXES[leaf]}{self.leaves - 1:06d}"])


@dataclass
class _Layout:
    """The File IDs given so far and the DICOMDIR's records."""

    directory: Directory = field(default_factory=Directory)
    names: _Names = field(default_factory=_Names)
    kinds: dict[tuple[str, str, bool, bool], str] = field(default_factory=dict)

    def place(self, stored: StoredInstance, instance: _Instance | None) -> str:
        """The instance's File ID; its records go into the directory when they can be made."""
        leaf = instance.leaf_kind(self.kinds) if instance is not None else ""
        if instance is None or leaf not in _PREFIXES:
            return self.names.other()
        keys = (instance.text("00100020"), stored.study_instance_uid, stored.series_instance_uid)

        def reference() -> Reference:
            file_id = self.names.file_id(keys, leaf)
            return Reference(file_id, stored.sop_class_uid, stored.sop_instance_uid,
                             stored.transfer_syntax_uid)  # fmt: skip

        def record() -> Dataset | ImageRecord:
            if leaf == "IMAGE":
                return instance.image()
            return leaf_record(leaf, _header(instance.element, everything=True))

        where = self.directory.add(keys, lambda: _header(instance.element), record, reference)
        return where.file_id if where is not None else self.names.other()


@dataclass(frozen=True)
class ZipDownload:
    """A ZIP planned to its last byte: where everything lies, what each member holds, its ETag."""

    layout: ZipLayout
    instances: tuple[StoredInstance, ...]  # in order; the DICOMDIR is the last member
    dicomdir: bytes
    etag: str  # a strong validator (RFC 9110 8.8.3): the same tag, the same bytes
    crcs: tuple[int | None, ...]  # each member's CRC-32 where the index knows it

    @property
    def length(self) -> int:
        return self.layout.length

    @property
    def blob_keys(self) -> tuple[str, ...]:
        return tuple(instance.blob_key for instance in self.instances)

    def crcs_known(self, start: int = 0, end: int | None = None) -> bool:
        """Whether the bytes from `start` to `end` can be sent with no blob read through the
        process: every CRC they hold is in the index."""
        stop = self.length if end is None else end
        return all(self.crcs[i] is not None for i in crcs_needed(self.layout, start, stop))

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[bytes | DataSpan]:
        """The bytes from `start` to `end` as `iter_zip_pieces` gives them; the DICOMDIR's
        data is bytes too, so every span is of a blob (`instances[span.index]`). Only for a
        range whose CRCs are known (`crcs_known`)."""
        stop = self.length if end is None else end
        dicomdir = len(self.instances)

        def crc_of(index: int) -> int:
            crc = self.crcs[index]
            assert crc is not None, "pieces() of a range with an unknown CRC"
            return crc

        for piece in iter_zip_pieces(self.layout, crc_of, start, stop):
            if isinstance(piece, DataSpan) and piece.index == dicomdir:
                yield self.dicomdir[piece.start : piece.end]
            else:
                yield piece


_Plan = tuple[tuple[str, ...], bytes, str]  # member names, DICOMDIR, ETag


def _plan_bytes(plan: _Plan) -> int:
    return len(plan[1]) + 64 * len(plan[0])


# Recently planned ZIPs' names, DICOMDIRs and ETags, by what decides them.
#
# A selection's member names and DICOMDIR follow from its instances' headers, which never
# change under their blob keys (a replaced instance is a new row with a new key): so the same
# time stamp and the same (SOP Instance UID, blob key, size) in the same order give the same
# names, DICOMDIR and ETag. A download manager's parallel ranges, a resumed download and the
# next person downloading the same transfer reuse them instead of reading every instance's
# DICOM JSON again. At most 32 MiB of DICOMDIRs (and names) are kept, per process.
_PREPARED: WeightedLRU[bytes, _Plan] = WeightedLRU(32 * 1024 * 1024, _plan_bytes)


def prepare_zip(archive: Archive, plan: ZipPlan, modified: datetime) -> ZipDownload:
    """Names every member and writes the DICOMDIR from the index; no blob is opened.
    `modified` is every member's time stamp (a transfer's gives the same ZIP each time)."""
    stamp = modified.astimezone(UTC).timetuple()[:6]
    instances = [instance for series in plan.series for instance in series]
    decided_by = hashlib.sha256(FORMAT + repr(stamp).encode())
    for instance in instances:
        decided_by.update(f"\0{instance.sop_instance_uid}\0{instance.blob_key}\0"
                          f"{instance.size}".encode())  # fmt: skip
    key = decided_by.digest()
    prepared = _PREPARED.get(key)
    if prepared is None:
        prepared = _name_and_direct(archive, plan, stamp)
        _PREPARED.put(key, prepared)
    names, dicomdir, etag = prepared
    entries = [(name, instance.size) for name, instance in zip(names, instances, strict=True)]
    zip_layout = ZipLayout([*entries, (DICOMDIR, len(dicomdir))], stamp)
    crcs = (*(instance.crc32 for instance in instances), zlib.crc32(dicomdir))
    return ZipDownload(zip_layout, tuple(instances), dicomdir, etag, crcs)


def _name_and_direct(
    archive: Archive, plan: ZipPlan, stamp: tuple[int, ...]
) -> tuple[tuple[str, ...], bytes, str]:
    """Every member's name, the DICOMDIR and the ETag, from the instances' DICOM JSON."""
    layout, names = _Layout(), list[str]()
    instances: list[StoredInstance] = []
    for series in plan.series:
        documents = _read_instances(archive, series)
        for instance in series:
            names.append(layout.place(instance, documents.get(instance.sop_instance_uid)))
            instances.append(instance)
    identity = hashlib.sha256(FORMAT + repr(stamp).encode())
    for name, instance in zip(names, instances, strict=True):
        identity.update(f"\0{name}\0{instance.size}\0{instance.blob_key}".encode())
    uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, identity.hexdigest()).int}"  # PS3.5 B.2
    dicomdir = layout.directory.encode(uid)
    identity.update(dicomdir)
    return tuple(names), dicomdir, f'"{identity.hexdigest()[:40]}"'


def iter_zip(
    archive: Archive, download: ZipDownload, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The ZIP's bytes from `start` to `end` (exclusive; default: to the last), in pieces of at
    most about a MiB (a blob's chunk), and at least one per member: what is out leaves before
    the next blob opens. The CRC of every blob read whole goes into the index (`remember`), so
    the next download of it need not read it."""
    opened: list[int] = []
    instances = download.instances

    def read(index: int) -> Iterator[bytes]:
        opened.append(index)
        if index == len(instances):
            return iter((download.dicomdir,))
        return archive.blobs.iter_chunks(instances[index].blob_key)

    stop = download.length if end is None else end
    known = list(download.crcs)
    learnt: list[int] = []

    def remember() -> None:
        """Into the index; a database that cannot take them now leaves them unknown."""
        found = [(instances[i], crc) for i in learnt if (crc := known[i]) is not None]
        learnt.clear()
        try:
            archive.remember_crcs(found)
        except SQLAlchemyError as error:
            log.warning("CRC-32 of %d blobs not kept: %s", len(found), error)

    pending: list[bytes] = []
    size = 0
    for part in iter_zip_range(download.layout, read, start, stop, known, learnt.append):
        if size and (opened or size + len(part) > FLUSH_BYTES):
            yield b"".join(pending)
            pending, size = [], 0
        if len(learnt) >= REMEMBER_BATCH:
            remember()
        opened.clear()
        if len(part) >= FLUSH_BYTES:  # a blob's chunk goes as it is, never copied
            yield part
            continue
        pending.append(part)
        size += len(part)
    remember()  # before the last bytes: a client that has them all may look at the index
    if size:
        yield b"".join(pending)
