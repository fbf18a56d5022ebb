"""The ZIP download: files byte for byte, then a DICOMDIR that pydicom and DCMTK read."""

from __future__ import annotations

import io
import subprocess
import tracemalloc
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet

from archive.store import Archive
from exchange.downloads import DICOMDIR, iter_zip, plan_zip, prepare_zip
from foundation.errors import StudyNotFound
from tests.factories import StudySpec, basic_text_sr, ct_slice, with_charset

SENT = datetime(2026, 12, 6, 9, 30, 12, tzinfo=UTC)


def _store(archive: Archive, folder: Path, datasets: list) -> dict[str, bytes]:  # type: ignore[type-arg]
    folder.mkdir()
    paths, originals = [], {}
    for number, ds in enumerate(datasets):
        path = folder / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        originals[ds.SOPInstanceUID] = path.read_bytes()
        paths.append(path)
    assert all(o.stored for o in archive.store_files(paths))
    return originals


def test_zip_holds_every_file_and_a_dicomdir_of_the_records_it_can_make(
    archive: Archive, tmp_path: Path
) -> None:
    spec = StudySpec(patient_name="Müller^Jürgen")
    ct = [ct_slice(spec=StudySpec(**{**spec.__dict__, "instance_number": n})) for n in (1, 2)]
    unnumbered = ct_slice(spec=spec, InstanceNumber=None)  # an IMAGE record needs one
    accented = with_charset("ISO_IR 192", spec=spec.new_series(2))
    report = basic_text_sr(spec=spec.new_series(3))
    other = ct_slice(spec=StudySpec(patient_id="OTHER-1").new_study())
    originals = _store(archive, tmp_path / "in", [*ct, unnumbered, accented, report, other])
    plan = plan_zip(archive, [spec.study_uid, other.StudyInstanceUID])
    data = b"".join(iter_zip(archive, prepare_zip(archive, plan, SENT)))
    out = tmp_path / "out"
    with zipfile.ZipFile(io.BytesIO(data)) as archive_file:
        names = archive_file.namelist()
        archive_file.extractall(out)
    assert names[-1] == DICOMDIR and len(names) == len(originals) + 1
    assert [n for n in names if n.startswith("OTHER/")] == ["OTHER/000000"]
    files = {dcmread(out / n, stop_before_pixels=True).SOPInstanceUID: n for n in names[:-1]}
    assert {uid: (out / name).read_bytes() for uid, name in files.items()} == originals
    file_set = FileSet(out / DICOMDIR)
    listed = {i.SOPInstanceUID for i in file_set}
    assert listed == set(originals) - {unnumbered.SOPInstanceUID}
    for instance in file_set:
        assert Path(instance.path).read_bytes() == originals[instance.SOPInstanceUID]
    assert sorted(file_set.find_values("PatientID")) == ["FERRY-0001", "OTHER-1"]
    kinds = {r.DirectoryRecordType for r in dcmread(out / DICOMDIR).DirectoryRecordSequence}
    assert kinds == {"PATIENT", "STUDY", "SERIES", "IMAGE", "SR DOCUMENT"}
    command = ["dcmdump", "-q", str(out / DICOMDIR)]
    dump = subprocess.run(command, capture_output=True, text=True, errors="replace")
    assert dump.returncode == 0 and not dump.stderr
    assert dump.stdout.count('"Directory Record" IMAGE') == 4


def test_an_unknown_study_is_refused_before_anything_is_sent(archive: Archive) -> None:
    with pytest.raises(StudyNotFound):
        plan_zip(archive, ["1.2.3.4.5.6.7.8"])


def test_the_same_selection_is_the_same_zip_and_any_range_of_it_streams_in_little_memory(
    archive: Archive, tmp_path: Path
) -> None:
    spec = StudySpec()
    slices = [ct_slice(1024, 1024, spec=StudySpec(**{**spec.__dict__, "instance_number": n}))
              for n in (1, 2, 3)]  # fmt: skip
    originals = _store(archive, tmp_path / "in", slices)
    plan = plan_zip(archive, [spec.study_uid])
    first, second = prepare_zip(archive, plan, SENT), prepare_zip(archive, plan, SENT)
    assert first.etag == second.etag and first.length == second.length
    later = prepare_zip(archive, plan, datetime(2026, 12, 7, tzinfo=UTC))
    assert later.etag != first.etag  # another time stamp, other bytes
    whole = b"".join(iter_zip(archive, first))
    assert len(whole) == first.length > 3 * 2 * 1024 * 1024
    middle = first.layout.members[1].data_start + 12345  # inside the second file
    view = memoryview(whole)
    tracemalloc.start()
    try:
        size = 0
        for piece in iter_zip(archive, second, middle):
            assert view[middle + size : middle + size + len(piece)] == piece
            size += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == first.length - middle
    assert peak < 3 * 1024 * 1024  # a file is 2 MiB, a chunk 1 MiB
    with zipfile.ZipFile(io.BytesIO(whole)) as zipped:
        read = {dcmread(io.BytesIO(zipped.read(n))).SOPInstanceUID: zipped.read(n)
                for n in zipped.namelist()[:-1]}  # fmt: skip
    assert read == originals


def test_a_streamed_zip_keeps_each_crc_and_the_next_one_reads_no_blob_for_them(
    archive: Archive, tmp_path: Path
) -> None:
    spec = StudySpec()
    slices = [ct_slice(spec=StudySpec(**{**spec.__dict__, "instance_number": n}))
              for n in (1, 2, 3)]  # fmt: skip
    _store(archive, tmp_path / "in", slices)
    plan = plan_zip(archive, [spec.study_uid])
    first = prepare_zip(archive, plan, SENT)
    assert first.crcs[:-1] == (None, None, None) and not first.crcs_known()
    whole = b"".join(iter_zip(archive, first))
    stored = archive.find_instances(spec.study_uid)
    blobs = [b"".join(archive.blobs.iter_chunks(i.blob_key)) for i in stored]
    assert [i.crc32 for i in stored] == [zlib.crc32(b) for b in blobs]
    again = prepare_zip(archive, plan_zip(archive, [spec.study_uid]), SENT)
    assert again.etag == first.etag and again.crcs_known()
    assert b"".join(iter_zip(archive, again)) == whole  # the streamed path, CRCs from the index
    sent = b"".join(p if isinstance(p, bytes) else blobs[p.index][p.start : p.end]
                    for p in again.pieces())  # fmt: skip
    assert sent == whole  # the zero-copy path's pieces, each blob's span from its file
    tail = again.layout.members[1].data_start + 100
    assert b"".join(iter_zip(archive, again, tail)) == whole[tail:]


def test_a_replaced_instance_gives_a_new_dicomdir_though_the_last_plan_is_kept(
    archive: Archive, tmp_path: Path
) -> None:
    spec = StudySpec()
    before = ct_slice(spec=spec, PatientName="Before^Nam")
    _store(archive, tmp_path / "in", [before])
    plan = plan_zip(archive, [spec.study_uid])
    first, again = prepare_zip(archive, plan, SENT), prepare_zip(archive, plan, SENT)
    assert (again.etag, again.dicomdir) == (first.etag, first.dicomdir)
    replacing = Archive(archive.engine, archive.blobs, replace_duplicates=True)
    after = ct_slice(spec=spec, PatientName="After^Name", SOPInstanceUID=before.SOPInstanceUID,
                     SeriesInstanceUID=before.SeriesInstanceUID)  # fmt: skip
    _store(replacing, tmp_path / "new", [after])
    replaced = prepare_zip(archive, plan_zip(archive, [spec.study_uid]), SENT)
    assert replaced.etag != first.etag and len(replaced.instances) == 1
    with zipfile.ZipFile(io.BytesIO(b"".join(iter_zip(archive, replaced)))) as zipped:
        directory = dcmread(io.BytesIO(zipped.read(DICOMDIR)))
    [patient] = [r for r in directory.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
    assert patient.PatientName == "After^Name"
