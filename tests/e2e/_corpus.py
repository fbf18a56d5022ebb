"""pydicom's own test files, as a new user would bring them in, and what each must become.

Every file is stored, or refused (or skipped, by `ferry import`) for a reason that is true of
that file; the reasons are kept here, one line a file. Every stored instance is then retrieved
byte for byte, its metadata and first frame are served, and /rendered and /thumbnail answer 200
or a clear 4xx (an error document with a message), never 500.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from archive.outcomes import CANNOT_UNDERSTAND, DATA_SET_DOES_NOT_MATCH_SOP_CLASS
from tests.conftest import RunningServer

# pydicom warns (UserWarning) about the corpus's deliberately odd files while reading them, in
# the server's threads too; the suite's warnings-as-errors would turn each into a refusal.
LENIENT_READING = pytest.mark.filterwarnings("ignore::UserWarning")

CORPUS = Path(get_testdata_files("MR_small.dcm")[0]).parent
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'

NOT_DICOM = "not DICOM"  # `ferry import` skips it; STOW-RS finds no SOP Class UID in it
NO_SOP_CLASS = "SOPClassUID is missing"
NO_STUDY = "StudyInstanceUID is missing"
NO_PIXELS = "PixelData (7FE0,0010) is missing; CT Image Storage requires it"
_TINY_ALPHA = "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000"

# file (relative to the corpus) -> (failure reason, what the refusal says, why it is true)
REFUSED: dict[str, tuple[int | None, str, str]] = {
    "README.txt": (None, NOT_DICOM, "text"),
    "crayons.icc": (None, NOT_DICOM, "an ICC profile"),
    "rtplan.dump": (None, NOT_DICOM, "a text dump"),
    "rtstruct.dump": (None, NOT_DICOM, "a text dump"),
    "test1.json": (None, NOT_DICOM, "DICOM JSON, not Part 10"),
    "test_PN.json": (None, NOT_DICOM, "DICOM JSON, not Part 10"),
    "zipMR.gz": (None, NOT_DICOM, "gzip-compressed"),
    "no_meta.dcm": (None, NOT_DICOM, "a stray byte before its first element; pydicom reads one UN"),
    "dicomdirtests/README.txt": (None, NOT_DICOM, "text"),
    "dicomdirtests/TINY_ALPHA/README": (None, NOT_DICOM, "text"),
    "MR_truncated.dcm": (CANNOT_UNDERSTAND, "data set truncated at byte 9630", "cut in Pixel Data"),
    "rtplan_truncated.dcm": (CANNOT_UNDERSTAND, "data set truncated at byte 2129", "cut"),
    "JPEGLSNearLossless_08.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_STUDY, "no study UID"),
    "JPEGLSNearLossless_16.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_STUDY, "no study UID"),
    "SC_rgb_jls_lossy_line.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_STUDY, "no study UID"),
    "SC_rgb_jls_lossy_sample.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_STUDY, "no study UID"),
    "UN_sequence.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "one sequence, no IOD"),
    "empty_charset_LEI.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a fragment"),
    "meta_missing_tsyntax.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a fragment"),
    "nested_priv_SQ.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a fragment"),
    "no_meta_group_length.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a fragment"),
    "priv_SQ.dcm": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a fragment"),
    **{
        f"dicomdirtests/{name}": (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "a DICOMDIR")
        for name in (
            "DICOMDIR-bigEnd",
            "DICOMDIR-empty.dcm",
            "DICOMDIR-implicit",
            "DICOMDIR-nooffset",
            "DICOMDIR-nopatient",
            "DICOMDIR-reordered",
        )
    },
    **{
        f"{_TINY_ALPHA}/{path.name}": (
            DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            NO_PIXELS,
            "CT Image Storage headers without their pixels",
        )
        for path in (CORPUS / _TINY_ALPHA).iterdir()
    },
}
# Stored, served as stored, but not decodable by the decoders installed (pydicom's own
# pixel_array fails on them the same way): /rendered and /thumbnail answer 422.
UNDECODABLE = {
    "JPEG-lossy.dcm": "12-bit JPEG Extended that libjpeg finds a misplaced marker in",
    "JPEG2000-embedded-sequence-delimiter.dcm": "a J2K header neither plugin reads",
}
# The DICOMDIRs a folder import reads as indexes, not instances; STOW-RS refuses them.
DICOMDIR_INDEXES = {"dicomdirtests/DICOMDIR", "dicomdirtests/TINY_ALPHA/DICOMDIR"}


def corpus_files() -> list[Path]:
    return sorted(Path(name) for name in get_testdata_files() if Path(name).is_file())


def relative(path: Path | str) -> str:
    return str(Path(path).relative_to(CORPUS))


def identity(path: Path) -> tuple[str, str, str]:
    ds = dcmread(path, stop_before_pixels=True, force=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def assert_refusal_is_true(
    name: str, reason: int | None, message: str, refused: dict[str, Any] = REFUSED
) -> None:
    """The file is in REFUSED, and was refused (or skipped) for the reason given there."""
    assert name in refused, f"{name} was refused ({reason}): {message}"
    expected_reason, says, _why = refused[name]
    if expected_reason is None:  # not DICOM at all: skipped by import, no SOP class for STOW
        assert reason is None or NO_SOP_CLASS in message or "not a DICOM" in message, message
        return
    assert (reason, says in message) == (expected_reason, True), (name, reason, message)


def instance_url(server: RunningServer, study: str, series: str, instance: str) -> str:
    return f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{instance}"


def only_part(response: httpx.Response) -> bytes:
    """The body of a one-part multipart/related response."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    start = body.index(b"\r\n\r\n", body.index(b"--" + boundary.encode())) + 4
    end = body.rindex(b"\r\n--" + boundary.encode())
    return body[start:end]


def assert_served(
    web: httpx.Client, server: RunningServer, path: Path, *, as_sent: bool = True
) -> None:
    """Retrieved byte for byte; metadata, first frame, rendered and thumbnail answered.

    A file sent by storescu is re-encoded by DCMTK on the way (`as_sent` False): then what is
    retrieved holds the file's pixel data value, byte for byte, rather than the file itself.

    An image renders (200), unless in UNDECODABLE (422); an instance without pixels has no
    image to render (406: no image type can be produced, whatever is accepted).
    """
    url = instance_url(server, *identity(path))
    data = path.read_bytes()
    name = relative(path)
    retrieved = web.get(url, headers={"Accept": AS_STORED})
    assert retrieved.status_code == 200, (name, retrieved.text[:300])
    stored = only_part(retrieved)
    if as_sent:
        assert stored == data or (data[128:132] != b"DICM" and stored.endswith(data)), name
    else:
        assert _same_pixels(stored, data), name
    assert web.get(f"{url}/metadata").status_code == 200, name
    frame = web.get(f"{url}/frames/1", headers={"Accept": FRAME_AS_STORED})
    has_pixels = any(tag in dcmread(path, force=True) for tag in (0x7FE00010, 0x7FE00008))
    expected = 200 if has_pixels else 404
    assert frame.status_code == expected, (name, frame.status_code, frame.text[:300])
    expected = 406 if not has_pixels else 422 if name in UNDECODABLE else 200
    for resource in ("rendered", "thumbnail"):
        answer = web.get(f"{url}/{resource}")
        assert answer.status_code == 200 or _clear_4xx(answer), (name, resource, answer.text[:300])
        assert answer.status_code == expected, (name, resource, answer.text[:300])


def _same_pixels(stored: bytes, sent: bytes) -> bool:
    """The same pixel data: the same values (DCMTK may swap big endian), else the same bytes."""
    first, second = (dcmread(io.BytesIO(data), force=True) for data in (stored, sent))
    if "PixelData" not in first or "PixelData" not in second:
        return ("PixelData" in first) == ("PixelData" in second)
    try:
        return bool(np.array_equal(first.pixel_array, second.pixel_array))
    except Exception:  # no decoder for it here: then it travelled as it was
        return bytes(first.PixelData) == bytes(second.PixelData)


def _clear_4xx(response: httpx.Response) -> bool:
    if not 400 <= response.status_code < 500:
        return False
    document: dict[str, Any] = response.json()
    return document["status"] == response.status_code and bool(document["error"].strip())
