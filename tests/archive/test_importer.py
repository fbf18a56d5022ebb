"""Import of files, folders, DICOMDIR file-sets and zip files, against a real archive."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from pydicom.fileset import FileSet
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from archive.importer import LINK_OUT, NOT_DICOM, ImportSummary, _Progress, import_paths
from archive.models import Instance
from archive.store import Archive
from tests import factories
from tests._incomplete import INCOMPLETE
from tests.factories import StudySpec


def instance_count(archive: Archive) -> int:
    with archive.engine.connect() as connection:
        return int(connection.execute(select(func.count(Instance.pk))).scalar_one())


def spooled(archive: Archive) -> list[str]:
    return sorted(path.name for path in archive.blobs.spool_dir.iterdir())


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tree(root: Path) -> tuple[StudySpec, StudySpec]:
    """Two studies, three series, seven instances, and two files that are not DICOM."""
    first = StudySpec()
    factories.write_series(root / "study1" / "series1", 3, spec=first)
    factories.write_series(root / "study1" / "series2", 2, spec=first.new_series(2))
    second = first.new_study()
    factories.write_series(root / "study2" / "deep" / "er", 2, spec=second)
    (root / "README.txt").write_text("Exported from the old PACS.\n")
    (root / "study1" / "photo.jpg").write_bytes(jpeg_bytes())
    return first, second


def assert_clean(summary: ImportSummary) -> None:
    assert summary.rejected == []
    assert summary.duplicates_refused == []


def test_folder_tree_stores_every_series_and_skips_other_files(archive, tmp_path):
    first, second = write_tree(tmp_path / "in")

    summary = import_paths(archive, [tmp_path / "in"], progress=False, batch_size=4)

    assert_clean(summary)
    assert (summary.stored, summary.already_stored) == (7, 0)
    assert summary.skipped == [
        (str(tmp_path / "in" / "README.txt"), NOT_DICOM),
        (str(tmp_path / "in" / "study1" / "photo.jpg"), NOT_DICOM),
    ]
    assert instance_count(archive) == 7
    on_disk = {p.stem for p in (tmp_path / "in" / "study1").rglob("*.dcm")}
    assert {s.sop_instance_uid for s in archive.find_instances(first.study_uid)} == on_disk
    assert len(archive.find_instances(second.study_uid)) == 2
    assert spooled(archive) == []


def test_reimport_counts_already_stored_and_adds_no_rows(archive, tmp_path):
    write_tree(tmp_path / "in")
    import_paths(archive, [tmp_path / "in"], progress=False)

    again = import_paths(archive, [tmp_path / "in"], progress=False, batch_size=3)

    assert_clean(again)
    assert (again.stored, again.already_stored) == (0, 7)
    assert instance_count(archive) == 7
    assert spooled(archive) == []
    assert "stored: 0\nalready stored (identical): 7\n" in again.describe()


def write_file_set(folder: Path, datasets: list) -> None:
    file_set = FileSet()
    for dataset in datasets:
        file_set.add(dataset)
    file_set.write(folder)


def test_dicomdir_references_are_imported_once_and_the_dicomdir_is_no_instance(archive, tmp_path):
    datasets = factories.study(2, 3)
    write_file_set(tmp_path / "cd", datasets)

    summary = import_paths(archive, [tmp_path / "cd"], progress=False)

    assert_clean(summary)
    assert summary.skipped == []
    assert (summary.stored, summary.already_stored, summary.dicomdirs) == (6, 0, 1)
    stored = archive.find_instances(datasets[0].StudyInstanceUID)
    assert {s.sop_instance_uid for s in stored} == {ds.SOPInstanceUID for ds in datasets}
    assert "DICOMDIR indexes read (not instances): 1" in summary.describe()


def test_dicomdir_named_alone_finds_lower_case_files_of_mounted_media(archive, tmp_path):
    datasets = factories.study(1, 2)
    write_file_set(tmp_path / "cd", datasets)
    for path in sorted((tmp_path / "cd").rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))

    summary = import_paths(archive, [tmp_path / "cd" / "DICOMDIR"], progress=False)

    assert_clean(summary)
    assert (summary.stored, summary.dicomdirs) == (2, 1)
    assert instance_count(archive) == 2


def test_dicomdir_naming_a_missing_file_is_reported(archive, tmp_path):
    datasets = factories.study(1, 2)
    write_file_set(tmp_path / "cd", datasets)
    files = sorted(p for p in (tmp_path / "cd").rglob("*") if p.is_file() and p.name != "DICOMDIR")
    files[0].unlink()

    summary = import_paths(archive, [tmp_path / "cd" / "DICOMDIR"], progress=False)

    assert summary.stored == 1
    assert summary.rejected == [
        (str(files[0]), f"named in {tmp_path / 'cd' / 'DICOMDIR'} but missing")
    ]


def test_zip_members_in_subfolders_are_streamed_into_the_archive(archive, tmp_path):
    datasets = factories.study(2, 2)
    bundle = tmp_path / "export.zip"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as writer:
        for number, ds in enumerate(datasets):
            writer.writestr(f"export/series{number // 2}/IM{number}", factories.part10_bytes(ds))
        writer.writestr("export/notes.txt", "no images here")
        writer.writestr("export/empty/", "")

    summary = import_paths(archive, [bundle], progress=False)

    assert_clean(summary)
    assert summary.stored == 4
    assert summary.skipped == [(f"{bundle}/export/notes.txt", NOT_DICOM)]
    assert instance_count(archive) == 4
    assert spooled(archive) == []


def test_zip_found_in_a_folder_and_a_damaged_member_is_rejected(archive, tmp_path):
    good, bad = factories.ct_slice(), factories.ct_slice()
    bad_bytes = factories.part10_bytes(bad)
    bundle = tmp_path / "in" / "Images.ZIP"
    bundle.parent.mkdir()
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as writer:
        writer.writestr("a/good.dcm", factories.part10_bytes(good))
        writer.writestr("b/bad.dcm", bad_bytes)
    data = bundle.read_bytes()
    at = data.index(bad_bytes) + len(bad_bytes) - 10  # the CRC check fails at the member's end
    bundle.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])

    summary = import_paths(archive, [tmp_path / "in"], progress=False)

    assert summary.stored == 1
    [(label, reason)] = summary.rejected
    assert label == f"{bundle}/b/bad.dcm"
    assert "CRC" in reason
    assert spooled(archive) == []


def test_bare_data_set_without_file_meta_is_stored(archive, tmp_path):
    ds = factories.ct_slice()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "IM0001").write_bytes(factories.without_file_meta_bytes(ds))

    summary = import_paths(archive, [tmp_path / "in"], progress=False)

    assert_clean(summary)
    assert summary.stored == 1
    [stored] = archive.find_instances(ds.StudyInstanceUID)
    assert stored.sop_instance_uid == ds.SOPInstanceUID


def test_file_cut_short_in_its_pixel_data_is_rejected_with_the_reason(archive, tmp_path):
    whole = factories.part10_bytes(factories.ct_slice())
    (tmp_path / "in").mkdir()
    cut = tmp_path / "in" / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - 1000])
    factories.write_series(tmp_path / "in", 1)

    summary = import_paths(archive, [tmp_path / "in"], progress=False)

    assert summary.stored == 1
    end = len(whole) - 1000
    [(label, reason)] = summary.rejected
    assert label == str(cut) and reason.endswith("(failure reason 0xC000)")
    assert reason.startswith(f"data set truncated at byte {end} ((7FE0,0010) PixelData of ")
    assert f"rejected: {cut}: data set truncated at byte {end}" in summary.describe()
    assert spooled(archive) == []


def test_same_instance_twice_in_one_run_is_already_stored_and_a_conflict_is_refused(
    archive, tmp_path
):
    ds = factories.ct_slice()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.dcm").write_bytes(factories.part10_bytes(ds))
    (tmp_path / "a" / "two.dcm").write_bytes(factories.part10_bytes(ds))
    ds.SeriesDescription = "changed"
    (tmp_path / "a" / "three.dcm").write_bytes(factories.part10_bytes(ds))

    summary = import_paths(archive, [tmp_path / "a"], progress=False)

    assert summary.rejected == []
    assert (summary.stored, summary.already_stored) == (1, 1)
    [(label, message)] = summary.duplicates_refused
    assert label == str(tmp_path / "a" / "three.dcm")
    assert "different content" in message
    assert instance_count(archive) == 1
    assert "refused duplicates (different content): 1" in summary.describe()


def test_links_neither_loop_nor_leave_the_folder_nor_import_twice(archive, tmp_path):
    [inside] = factories.write_series(tmp_path / "in" / "series", 1)
    [outside] = factories.write_series(tmp_path / "elsewhere", 1)
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    (tmp_path / "in" / "alias.dcm").symlink_to(inside)
    (tmp_path / "in" / "out.dcm").symlink_to(outside)

    summary = import_paths(archive, [tmp_path / "in", inside], progress=False)

    assert_clean(summary)
    assert (summary.stored, summary.already_stored) == (1, 0)
    assert summary.skipped == [(str(tmp_path / "in" / "out.dcm"), LINK_OUT)]


def test_missing_argument_is_rejected(archive, tmp_path):
    summary = import_paths(archive, [tmp_path / "nothing"], progress=False)

    assert summary.rejected == [
        (str(tmp_path / "nothing"), "cannot read: No such file or directory")
    ]


def test_spool_is_emptied_when_the_database_fails_mid_import(archive, tmp_path):
    factories.write_series(tmp_path / "in", 5)
    with archive.engine.begin() as connection:
        connection.execute(text("DROP TABLE instance"))

    with pytest.raises(DBAPIError):
        import_paths(archive, [tmp_path / "in"], progress=False, batch_size=2)

    assert spooled(archive) == []


def test_progress_line_rewrites_itself_and_ends_with_a_newline():
    stream = io.StringIO()
    progress = _Progress(True, 3, stream)

    progress.advance()
    progress.count(1)
    progress.close()

    assert stream.getvalue().startswith("\r1/3 files  ")
    assert stream.getvalue().endswith("instances/s\x1b[K\n")


def run_cli(data_dir: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    """`ferry import` into institution IMP, created by `ferry admin` on first use."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    environment["FERRY_DATA_DIR"] = str(data_dir)
    ferry = [sys.executable, "-m", "ferry.cli"]
    if not (data_dir / "ferry.db").exists():
        create = [*ferry, "admin", "create-institution", "IMP", "Import test"]
        subprocess.run(create, env=environment, check=True, capture_output=True, timeout=120)
    command = [*ferry, "import", *map(str, paths), "--quiet", "--institution", "IMP"]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def test_cli_import_prints_the_counts_and_fails_on_rejections(tmp_path):
    factories.write_series(tmp_path / "in", 3)
    (tmp_path / "in" / "README.txt").write_text("hello\n")

    done = run_cli(tmp_path / "var", tmp_path / "in")

    assert done.returncode == 0, done.stderr
    assert "stored: 3\n" in done.stdout
    assert "already stored (identical): 0\n" in done.stdout
    assert f"skipped: {tmp_path / 'in' / 'README.txt'}: {NOT_DICOM}" in done.stdout
    assert "\r" not in done.stderr

    whole = factories.part10_bytes(factories.ct_slice())
    (tmp_path / "in" / "cut.dcm").write_bytes(whole[:-500])

    again = run_cli(tmp_path / "var", tmp_path / "in")

    assert again.returncode == 1, again.stderr
    assert "already stored (identical): 3\n" in again.stdout
    assert "rejected: 1\n" in again.stdout
    assert not list((tmp_path / "var" / "blobs" / ".incoming").iterdir())


@pytest.mark.parametrize("case", INCOMPLETE)
def test_a_data_set_that_is_not_whole_is_rejected_with_its_reason(archive, tmp_path, case):
    incomplete = INCOMPLETE[case]()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.dcm").write_bytes(incomplete.data)

    summary = import_paths(archive, [tmp_path / "in"], progress=False)

    [(label, reason)] = summary.rejected
    assert label == str(tmp_path / "in" / "part.dcm")
    assert incomplete.says in reason
    assert reason.endswith(f"(failure reason 0x{incomplete.reason:04X})")
    assert summary.stored == 0 and instance_count(archive) == 0
    assert spooled(archive) == []
