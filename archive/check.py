"""Consistency of index and blob store: orphans found, and removed on request."""

from __future__ import annotations

from dataclasses import dataclass, field

from archive.blobstore import FilesystemBlobStore
from archive.store import Archive


@dataclass
class CheckReport:
    orphan_blobs: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    spooled_files: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def consistent(self) -> bool:
        return not (self.orphan_blobs or self.missing_blobs or self.spooled_files)


def check_archive(archive: Archive, *, repair: bool = False) -> CheckReport:
    """Blobs without an index row are leftovers of an interrupted store: safe to delete.

    Index rows without a blob must never happen; they are reported, not touched.
    Run it while no store is in progress, or a store's fresh blob may count as an orphan.
    """
    blobs = archive.blobs
    assert isinstance(blobs, FilesystemBlobStore)
    indexed = set(archive.iter_blob_keys())
    present = set(blobs.iter_keys())
    report = CheckReport(
        orphan_blobs=sorted(present - indexed),
        missing_blobs=sorted(indexed - present),
        spooled_files=sorted(p.name for p in blobs.iter_spooled()),
    )
    if repair:
        blobs.delete(report.orphan_blobs)
        for name in report.spooled_files:
            (blobs.spool_dir / name).unlink(missing_ok=True)
        report.repaired = True
    return report
