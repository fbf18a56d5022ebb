"""pydicom's test corpus through STOW-RS, a file a request, each checked as soon as it is stored.

Duplicates are replaced here (FERRY_REPLACE_DUPLICATES), so that the many files sharing one
SOP Instance UID (MR_small.dcm in every transfer syntax, say) are each stored and served in turn.
"""

from __future__ import annotations

import pytest

from archive.outcomes import DATA_SET_DOES_NOT_MATCH_SOP_CLASS
from tests.conftest import RunningServer
from tests.e2e._corpus import (
    CORPUS,
    DICOMDIR_INDEXES,
    LENIENT_READING,
    NO_SOP_CLASS,
    REFUSED,
    assert_refusal_is_true,
    assert_served,
    corpus_files,
    identity,
    instance_url,
    relative,
)

pytestmark = [LENIENT_READING, pytest.mark.slow]
SETTINGS = {"replace_duplicates": True}
BOUNDARY = "corpus-walk"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081197"


def one_part(data: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_every_file_is_stored_and_served_or_refused_for_a_true_reason(
    corpus_server: RunningServer,
) -> None:
    server = corpus_server
    # sent on their own, DICOMDIRs are data sets without a SOP class
    refused = REFUSED | {
        name: (DATA_SET_DOES_NOT_MATCH_SOP_CLASS, NO_SOP_CLASS, "DICOMDIR")
        for name in DICOMDIR_INDEXES
    }
    stored = 0
    with server.http() as web:
        for path in corpus_files():
            response = web.post(
                f"{server.dicomweb_url}/studies",
                content=one_part(path.read_bytes()),
                headers={"Content-Type": CONTENT_TYPE},
            )
            if response.status_code == 200:
                assert relative(path) not in refused, f"{relative(path)} was stored"
                assert_served(web, server, path)
                stored += 1
                continue
            assert response.status_code == 409, (relative(path), response.text[:300])
            [item] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
            reason = item[FAILURE_REASON]["Value"][0]
            assert_refusal_is_true(relative(path), reason, response.headers["Warning"], refused)
    assert stored == len(corpus_files()) - len(refused)


def test_the_files_of_issue_15_are_stored_and_rendered(corpus_server: RunningServer) -> None:
    """Padding after encapsulated pixel data; implicit VR under an explicit syntax; a bad IS."""
    server = corpus_server
    with server.http() as web:
        for name in ("MR_small_RLE.dcm", "SC_rgb_jpeg.dcm", "badVR.dcm"):
            path = CORPUS / name
            response = web.post(
                f"{server.dicomweb_url}/studies",
                content=one_part(path.read_bytes()),
                headers={"Content-Type": CONTENT_TYPE},
            )
            assert response.status_code == 200, (name, response.text)
            url = instance_url(server, *identity(path))
            rendered = web.get(f"{url}/rendered", headers={"Accept": "image/png"})
            assert (name, rendered.status_code) == (name, 200)
            assert rendered.headers["content-type"] == "image/png"
        bad = instance_url(server, *identity(CORPUS / "badVR.dcm"))
        for resource in ("/rendered", "/thumbnail", "/frames/1"):
            response = web.get(bad + resource, headers={"Accept": "*/*"})
            assert response.status_code == 200
            assert "NumberOfFrames '1A' is not a number; read as 1" in response.headers["Warning"]
