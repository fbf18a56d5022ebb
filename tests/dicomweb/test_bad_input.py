"""Broken and hostile requests get a 4xx with a reason, never a 500 (PS3.18 8.6, 10.4-10.6).

After each one the archive is still consistent (no index row without its blob, nothing left
in the spool folder) and the server still answers and still stores.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import config as pydicom_config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from archive.check import check_archive
from archive.models import Instance
from ferry.settings import Settings
from tests import factories
from tests._incomplete import INCOMPLETE
from tests.conftest import RunningServer, run_server

BOUNDARY = "ferry-test-boundary"
DICOM_PARTS = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
SMALL_LIMIT = 1024 * 1024

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"

HOSTILE_VALUES = [
    "' OR 1=1 --",
    "%",
    "_",
    "\\",
    ";DROP TABLE study;",
    "../../etc/passwd",
    "..%2F..%2F",
    "../../",
    "%00",
    "\x00",
]
MATCHING_KEYS = [
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyInstanceUID",
    "AccessionNumber",
    "ModalitiesInStudy",
]
CONTROL_KEYS = ["limit", "offset", "includefield", "fuzzymatching"]


# -- helpers -------------------------------------------------------------------------------


def multipart(*parts: tuple[str, bytes], close: bool = True) -> bytes:
    """A multipart/related body (RFC 2046 §5.1.1), or without close the start of one."""
    body = b""
    for content_type, data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def dicom_part(ds: Dataset | None = None) -> tuple[str, bytes]:
    return "application/dicom", factories.part10_bytes(ds or factories.ct_slice())


def post(
    server: RunningServer,
    body: bytes | Iterator[bytes],
    content_type: str = DICOM_PARTS,
    path: str = "/studies",
) -> httpx.Response:
    return httpx.post(
        f"{server.dicomweb_url}{path}",
        content=body,
        headers={"Content-Type": content_type, **server.headers},
        timeout=30,
    )


def indexed_count(server: RunningServer) -> int:
    with server.archive.engine.connect() as connection:
        return int(connection.execute(select(func.count(Instance.pk))).scalar_one())


def assert_error_document(response: httpx.Response) -> None:
    """The error body says what was wrong: {"error": message, "status": code}."""
    document = response.json()
    assert document["status"] == response.status_code
    assert isinstance(document["error"], str) and document["error"].strip()


def assert_refused_instances(response: httpx.Response, count: int = 1) -> list[dict]:
    """409 or 202 with one FailedSOPSequence item per refused part, each with a reason."""
    assert response.status_code in (202, 409), response.text[:500]
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert len(failed) == count
    for item in failed:
        assert item[FAILURE_REASON]["Value"][0] > 0
    assert response.headers.get("Warning", "").startswith("299 ")
    return failed


def assert_spool_empty(server: RunningServer) -> None:
    assert sorted(p.name for p in server.archive.blobs.spool_dir.iterdir()) == []


def assert_consistent(server: RunningServer) -> None:
    report = check_archive(server.archive)
    assert report.missing_blobs == [], "an index row has no blob"
    assert report.spooled_files == [], "a spooled part was left behind"
    assert report.consistent, report


def assert_still_serving(server: RunningServer) -> None:
    """The archive is consistent, and the server answers and stores as before."""
    assert_spool_empty(server)
    assert_consistent(server)
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    before = indexed_count(server)
    ds = factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    found = DICOMwebClient(server.dicomweb_url, headers=server.headers).search_for_instances(
        search_filters={"SOPInstanceUID": ds.SOPInstanceUID}
    )
    assert [Dataset.from_json(f).SOPInstanceUID for f in found] == [ds.SOPInstanceUID]
    assert indexed_count(server) == before + 1
    assert_consistent(server)


def expect(condition: bool, message: str) -> None:
    """Fail with the message alone, for the xfail tests that fail on every run.

    On this Python 3.11.7, a garbage collection during pytest's ast.parse of a traceback's
    source can raise SystemError "AST constructor recursion depth mismatch" (pytest-dev/pytest
    #10763, CPython gh-106905) and end the session with an INTERNALERROR; a failure without a
    traceback parses no source.
    """
    if not condition:
        pytest.fail(message, pytrace=False)


def without_validation(ds: Dataset, keyword: str, vr: str, value: object) -> Dataset:
    """Set a value pydicom would refuse to write, as a careless sender does."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    ds[tag] = DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)
    return ds


@pytest.fixture
def small_server(settings: Settings, archive) -> Iterator[RunningServer]:
    """A server whose FERRY_MAX_REQUEST_BYTES is 1 MiB."""
    yield from run_server(replace(settings, max_request_bytes=SMALL_LIMIT), archive)


# -- STOW-RS: the request as a whole cannot be read ---------------------------------------


ONE_GOOD_PART = None  # a valid instance the server must not store, built per run
# What is wrong: (Content-Type, body, status). One server takes them all, one after another.
UNREADABLE_REQUESTS = {
    "wrong boundary": (DICOM_PARTS.replace(BOUNDARY, "another-boundary"), ONE_GOOD_PART, 400),
    "no boundary": ('multipart/related; type="application/dicom"', ONE_GOOD_PART, 400),
    "Content-Type foo": ("foo", ONE_GOOD_PART, 415),
    "Content-Type text/plain": ("text/plain", ONE_GOOD_PART, 415),
    "parts of type JSON": (
        f'multipart/related; type="application/json"; boundary={BOUNDARY}',
        ONE_GOOD_PART,
        415,
    ),
    "empty body": (DICOM_PARTS, b"", 400),
    "zero parts": (DICOM_PARTS, f"--{BOUNDARY}--\r\n".encode(), 400),
}


def test_stow_refuses_unreadable_requests(server) -> None:
    for case, (content_type, body, status) in UNREADABLE_REQUESTS.items():
        before = indexed_count(server)
        body = multipart(dicom_part()) if body is ONE_GOOD_PART else body
        response = post(server, body, content_type)
        assert (case, response.status_code) == (case, status)
        assert_error_document(response)
        assert indexed_count(server) == before, case
        assert_still_serving(server)


def test_stow_refuses_a_boundary_longer_than_rfc_2046_allows(server) -> None:
    long_boundary = "b" * 71
    body = multipart(dicom_part()).replace(BOUNDARY.encode(), long_boundary.encode())
    response = post(server, body, DICOM_PARTS.replace(BOUNDARY, long_boundary))
    expect(response.status_code == 400, f"71-character boundary: {response.status_code}")
    assert_error_document(response)
    assert_still_serving(server)


# -- STOW-RS: a part cannot be stored ------------------------------------------------------


def _truncated_part() -> bytes:
    data = factories.part10_bytes(factories.ct_slice())
    # The body stops halfway through the part, and no delimiter follows.
    return multipart(("application/dicom", data[: len(data) // 2]), close=False)[:-2]


def _not_dicom() -> bytes:
    return multipart(("application/dicom", b"not DICOM at all " * 64))


def _png_part() -> bytes:
    return multipart(("image/png", factories.part10_bytes(factories.ct_slice())))


def _truncated_pixel_data() -> bytes:
    data = factories.part10_bytes(factories.ct_slice())
    return multipart(("application/dicom", data[:-1000]))


def _missing_sop_instance_uid() -> bytes:
    ds = factories.ct_slice()
    del ds.SOPInstanceUID
    return multipart(dicom_part(ds))


def _invalid_uid() -> bytes:
    ds = factories.ct_slice()
    without_validation(ds, "SOPInstanceUID", "UI", "1.2.abc")
    without_validation(ds.file_meta, "MediaStorageSOPInstanceUID", "UI", "1.2.abc")
    return multipart(dicom_part(ds))


PARTS_NOT_STORED = {
    "truncated part": _truncated_part,
    "not DICOM": _not_dicom,
    "image/png part": _png_part,
    "truncated pixel data": _truncated_pixel_data,
    "no SOPInstanceUID": _missing_sop_instance_uid,
    "invalid UID": _invalid_uid,
}


def test_stow_refuses_parts_it_cannot_store(server) -> None:
    for case, build_body in PARTS_NOT_STORED.items():
        before = indexed_count(server)
        response = post(server, build_body())
        assert (case, response.status_code) == (case, 409)
        assert_refused_instances(response)
        assert REFERENCED_SOP_SEQUENCE not in response.json(), case
        assert indexed_count(server) == before, case
        assert_still_serving(server)


def test_stow_keeps_the_complete_part_before_a_truncated_one(server) -> None:
    good = factories.ct_slice()
    cut = factories.part10_bytes(factories.ct_slice())
    # The second part's body stops halfway and no delimiter follows it.
    body = multipart(dicom_part(good), ("application/dicom", cut[: len(cut) // 2]), close=False)
    body = body[:-2]
    response = post(server, body)
    assert response.status_code == 202
    assert_refused_instances(response)
    stored = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert [s[REFERENCED_SOP_INSTANCE_UID]["Value"][0] for s in stored] == [good.SOPInstanceUID]
    retrieved = DICOMwebClient(server.dicomweb_url, headers=server.headers).retrieve_instance(
        good.StudyInstanceUID, good.SeriesInstanceUID, good.SOPInstanceUID
    )
    assert retrieved.PixelData == good.PixelData
    assert indexed_count(server) == 1
    assert_still_serving(server)


def test_stow_to_a_study_refuses_an_instance_of_another_study(server) -> None:
    target = factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([target])
    stranger = factories.ct_slice()
    response = post(
        server, multipart(dicom_part(stranger)), path=f"/studies/{target.StudyInstanceUID}"
    )
    assert response.status_code == 409
    [item] = assert_refused_instances(response)
    assert item[REFERENCED_SOP_INSTANCE_UID]["Value"] == [stranger.SOPInstanceUID]
    assert stranger.StudyInstanceUID in response.headers["Warning"]
    with server.http() as web:
        missing = web.get(f"{server.dicomweb_url}/studies/{stranger.StudyInstanceUID}")
        found = web.get(
            f"{server.dicomweb_url}/instances", params={"SOPInstanceUID": stranger.SOPInstanceUID}
        )
    assert missing.status_code == 404
    assert found.status_code == 200 and found.json() == []
    assert indexed_count(server) == 1
    assert_still_serving(server)


def test_stow_refuses_a_binary_value_of_impossible_length(server) -> None:
    good = factories.ct_slice()
    data = factories.part10_bytes(factories.ct_slice())
    pixel_data = data.index(b"\xe0\x7f\x10\x00OW")
    # (0028,0106) SmallestImagePixelValue, US, 3 bytes: not a whole number of 16-bit values.
    bad = data[:pixel_data] + b"\x28\x00\x06\x01US\x03\x00abc" + data[pixel_data:]
    response = post(server, multipart(dicom_part(good), ("application/dicom", bad)))
    expect(response.status_code in (200, 202), f"one malformed element: {response.status_code}")
    stored = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert good.SOPInstanceUID in {s[REFERENCED_SOP_INSTANCE_UID]["Value"][0] for s in stored}
    if response.status_code == 202:
        assert_refused_instances(response)
    assert_still_serving(server)


def test_stow_of_a_ten_megabyte_patient_name_is_clean_and_qido_still_works(server) -> None:
    spec = factories.StudySpec(patient_id=f"HUGE-{generate_uid()[-12:]}")
    ds = factories.ct_slice(spec=spec)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # PN over 64 KiB needs 32-bit lengths
    huge_name = "A" * (10 * 1024 * 1024)
    without_validation(ds, "PatientName", "PN", huge_name)
    response = post(server, multipart(dicom_part(ds)))
    assert response.status_code in (200, 409), response.text[:500]
    if response.status_code == 409:
        assert_refused_instances(response)
        assert indexed_count(server) == 0
    else:
        by_id = httpx.get(
            f"{server.dicomweb_url}/studies",
            params={"PatientID": spec.patient_id},
            headers=server.headers,
            timeout=30,
        )
        assert by_id.status_code == 200
        [study] = by_id.json()
        assert study["0020000D"]["Value"] == [spec.study_uid]
        by_name = httpx.get(
            f"{server.dicomweb_url}/studies",
            params={"PatientName": "AAAA*"},
            headers=server.headers,
            timeout=30,
        )
        assert by_name.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in by_name.json()] == [spec.study_uid]
    for name in ("A" * 64, "B*", "A" * 5000):
        found = httpx.get(
            f"{server.dicomweb_url}/studies",
            params={"PatientName": name},
            headers=server.headers,
            timeout=30,
        )
        assert found.status_code in (200, 400), (name[:10], found.status_code)
    assert_still_serving(server)


# -- QIDO-RS: hostile query values ---------------------------------------------------------


def _store_reference_study(server: RunningServer) -> list[Dataset]:
    spec = factories.StudySpec(patient_name="O'Brien^Pat", patient_id="P_1", accession_number="A%1")
    instances = factories.study(n_series=1, per_series=2, spec=spec)
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances(instances)
    return instances


def _retrieve_urls(documents: list[dict]) -> set[str]:
    return {d["00081190"]["Value"][0] for d in documents}


def test_qido_hostile_values_match_nothing(server) -> None:
    _store_reference_study(server)
    queries = [({key: value}, True) for key in MATCHING_KEYS for value in HOSTILE_VALUES]
    queries += [({key: value}, False) for key in CONTROL_KEYS for value in HOSTILE_VALUES]
    queries += [({"PatientName": v, "fuzzymatching": "true"}, True) for v in HOSTILE_VALUES]
    problems = []
    with httpx.Client(base_url=server.dicomweb_url, headers=server.headers, timeout=30) as web:
        for level in ("/studies", "/series", "/instances"):
            problems += _hostile_query_problems(web, level, queries)
    assert problems == []
    assert_still_serving(server)


def _hostile_query_problems(
    web: httpx.Client, level: str, queries: list[tuple[dict[str, str], bool]]
) -> list[tuple]:
    """A filter must match nothing; paging and includefield may only narrow what is shown."""
    problems: list[tuple] = []
    everything = _retrieve_urls(web.get(level).json())
    assert everything
    for params, filters in queries:
        response = web.get(level, params=params)
        if response.status_code == 400:
            assert_error_document(response)
            continue
        if response.status_code != 200:
            problems.append((level, params, response.status_code))
            continue
        shown = _retrieve_urls(response.json())
        if (filters and shown) or not shown <= everything:
            problems.append((level, params, f"showed {len(shown)} results"))
    return problems


def test_qido_negative_non_numeric_and_huge_paging(server) -> None:
    _store_reference_study(server)
    url = f"{server.dicomweb_url}/instances"
    everything = _retrieve_urls(httpx.get(url, headers=server.headers).json())
    values = ("-1", "-0x10", "abc", "1.5", "", " ", "1e3", str(10**30), str(-(10**30)))
    with server.http() as web:
        for key in ("limit", "offset"):
            for value in values:
                response = web.get(url, params={key: value})
                assert response.status_code in (200, 400), (key, value, response.status_code)
                if response.status_code == 400:
                    assert_error_document(response)
                else:
                    assert _retrieve_urls(response.json()) <= everything
        assert web.get(url, params={"offset": str(10**30)}).status_code == 400
        huge_limit = web.get(url, params={"limit": str(10**30)})
    assert huge_limit.status_code == 200
    assert _retrieve_urls(huge_limit.json()) == everything
    assert_still_serving(server)


def test_qido_integer_keys_refuse_an_empty_list(server) -> None:
    _store_reference_study(server)
    for key in ("InstanceNumber", "SeriesNumber"):
        for value in ("\\", ","):
            response = httpx.get(
                f"{server.dicomweb_url}/instances", params={key: value}, headers=server.headers
            )
            status = response.status_code
            expect(status in (200, 400), f"{key}={value!r}: {status}")
            if status == 200:
                assert response.json() == []
    assert_still_serving(server)


def test_qido_ignores_garbage_parameter_names(server) -> None:
    _store_reference_study(server)
    for name in ("患者", "PatientAge\u3000", "PatientAge\r\n"):
        try:
            response = httpx.get(
                f"{server.dicomweb_url}/studies", params={name: "1"}, headers=server.headers
            )
        except httpx.RemoteProtocolError as error:
            expect(False, f"{name!r}: connection dropped: {error}")
        expect(response.status_code in (200, 400), f"{name!r}: {response.status_code}")
    assert_still_serving(server)


# -- path segments ---------------------------------------------------------------------------

_PATHS = [
    ("GET", "/studies/{x}"),
    ("GET", "/studies/{x}/metadata"),
    ("GET", "/studies/{x}/series"),
    ("GET", "/studies/{x}/instances"),
    ("GET", "/studies/{study}/series/{x}"),
    ("GET", "/studies/{study}/series/{x}/metadata"),
    ("GET", "/studies/{study}/series/{x}/instances"),
    ("GET", "/studies/{study}/series/{series}/instances/{x}"),
    ("GET", "/studies/{study}/series/{series}/instances/{x}/metadata"),
    ("DELETE", "/studies/{x}"),
    ("DELETE", "/studies/{study}/series/{x}"),
    ("DELETE", "/studies/{study}/series/{series}/instances/{x}"),
    ("POST", "/studies/{x}"),
]


def _raw_request(server: RunningServer, method: str, path: str, body: bytes = b"") -> tuple:
    """http.client sends the path as written; httpx would resolve the dot segments first."""
    connection = http.client.HTTPConnection("127.0.0.1", server.settings.http_port, timeout=10)
    try:
        headers = {"Content-Type": DICOM_PARTS} if method == "POST" else {}
        headers |= server.headers
        connection.request(method, path, body=body if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _path_problems(server: RunningServer, value: str, known: Dataset) -> list[tuple]:
    """Each WADO-RS, QIDO-RS, DELETE and STOW-RS URL with `value` as one UID segment."""
    problems: list[tuple] = []
    stow_body = multipart(dicom_part())
    for encoded in sorted({quote(value, safe=""), quote(value, safe="/%;'")}):
        for method, template in _PATHS:
            path = "/dicom-web" + template.format(
                x=encoded, study=known.StudyInstanceUID, series=known.SeriesInstanceUID
            )
            status, body = _raw_request(server, method, path, stow_body)
            if status not in (400, 404):
                problems.append((method, path, status))
            elif not json.loads(body)["error"]:
                problems.append((method, path, "no reason given"))
    return problems


def test_hostile_path_segments_are_refused(server) -> None:
    instances = _store_reference_study(server)
    problems = []
    for value in [*HOSTILE_VALUES, "1.2.abc", "1." + "2" * 70, "1..2", "1.2.", ".", ".."]:
        problems += _path_problems(server, value, instances[0])
    assert problems == []
    assert indexed_count(server) == len(instances)
    retrieved = DICOMwebClient(server.dicomweb_url, headers=server.headers).retrieve_study(
        instances[0].StudyInstanceUID
    )
    assert len(retrieved) == len(instances)
    assert_still_serving(server)


def test_unknown_uids_in_paths_are_not_found(server) -> None:
    known = _store_reference_study(server)[0]
    unknown = generate_uid()
    base = server.dicomweb_url
    for path in (
        f"/studies/{unknown}",
        f"/studies/{unknown}/metadata",
        f"/studies/{known.StudyInstanceUID}/series/{unknown}",
        f"/studies/{unknown}/series/{known.SeriesInstanceUID}",
        f"/studies/{known.StudyInstanceUID}/series/{known.SeriesInstanceUID}/instances/{unknown}",
        f"/studies/{unknown}/series/{known.SeriesInstanceUID}/instances/{known.SOPInstanceUID}",
    ):
        for method in ("GET", "DELETE") if not path.endswith("/metadata") else ("GET",):
            response = httpx.request(method, base + path, headers=server.headers)
            assert response.status_code == 404, (method, path)
            assert_error_document(response)
    for path in (f"/studies/{unknown}/series", f"/studies/{unknown}/instances"):
        response = httpx.get(base + path, headers=server.headers)
        assert (response.status_code, response.json()) == (200, [])
    assert indexed_count(server) == 2
    assert_still_serving(server)


# -- size limits, chunked bodies, clients that go away ------------------------------------


def _parts_over(limit: int) -> bytes:
    parts = []
    while sum(len(data) for _, data in parts) <= limit + 64 * 1024:
        parts.append(dicom_part(factories.ct_slice(256, 256)))
    return multipart(*parts)


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_declared_length_over_the_limit_is_413(small_server) -> None:
    body = _parts_over(SMALL_LIMIT)
    response = post(small_server, body)
    assert response.status_code == 413
    assert_error_document(response)
    assert str(SMALL_LIMIT) in response.json()["error"]
    assert indexed_count(small_server) == 0
    assert_still_serving(small_server)


def test_chunked_body_over_the_limit_is_413(small_server) -> None:
    response = post(small_server, _chunks(_parts_over(SMALL_LIMIT)))
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 413
    assert_error_document(response)
    assert indexed_count(small_server) == 0
    assert_still_serving(small_server)


def test_chunked_stow_is_stored(server) -> None:
    instances = [factories.ct_slice(128, 128) for _ in range(3)]
    response = post(server, _chunks(multipart(*(dicom_part(ds) for ds in instances)), 7777))
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200, response.text[:500]
    stored = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert {s[REFERENCED_SOP_INSTANCE_UID]["Value"][0] for s in stored} == {
        ds.SOPInstanceUID for ds in instances
    }
    assert indexed_count(server) == 3
    assert_still_serving(server)


def _wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_client_disconnecting_mid_upload_leaves_nothing(server) -> None:
    body = multipart(*(dicom_part(factories.ct_slice(512, 512)) for _ in range(10)))
    spool = server.archive.blobs.spool_dir
    request = (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\n"
        f"Content-Type: {DICOM_PARTS}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.settings.http_port), timeout=10) as sock:
        sock.sendall(request + body[: len(body) // 2])
        assert _wait_until(lambda: any(spool.iterdir())), "the upload never reached the spool"
    assert _wait_until(lambda: not any(spool.iterdir())), sorted(p.name for p in spool.iterdir())
    assert indexed_count(server) == 0
    assert_still_serving(server)


# -- STOW-RS: data sets that are not whole --------------------------------------------------


@pytest.mark.parametrize("case", INCOMPLETE)
def test_stow_refuses_a_data_set_that_is_not_whole_with_its_reason(server, case) -> None:
    incomplete = INCOMPLETE[case]()
    response = post(server, multipart(("application/dicom", incomplete.data)))
    [item] = assert_refused_instances(response)
    assert item[FAILURE_REASON]["Value"] == [incomplete.reason]
    assert incomplete.says in response.headers["Warning"]
    assert indexed_count(server) == 0
    assert_still_serving(server)


def test_stored_data_that_does_not_read_is_422_on_frames_rendered_and_thumbnail(server) -> None:
    """As if stored before the walk refused it: the blob is cut after the store."""
    ds = factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    [stored] = server.archive.find_instances(ds.StudyInstanceUID)
    path = server.archive.blobs.root / stored.blob_key
    path.write_bytes(path.read_bytes()[:-1000])
    url = (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    with server.http() as web:
        for resource in ("/frames/1", "/rendered", "/thumbnail", "/frames/1/rendered"):
            response = web.get(url + resource)
            assert (resource, response.status_code) == (resource, 422), response.text
            assert_error_document(response)


# -- stored Image Pixel values that are bad: refused where frames are found, tolerated where a
#    codec is only asked whether it can take them (archive.pixel_module) -------------------


def _us_element(element: int) -> bytes:
    """The head of an explicit VR little endian US element of group 0028."""
    return struct.pack("<HH", 0x0028, element) + b"US\x02\x00"


ROWS, COLUMNS, BITS_ALLOCATED = 0x0010, 0x0011, 0x0100
# (element, its new value or None to remove it, what the refusal says)
BAD_PIXEL_MODULES = {
    "Rows missing": (ROWS, None, "Rows is missing"),
    "BitsAllocated 0": (BITS_ALLOCATED, 0, "BitsAllocated 0 is less than 1"),
    "Columns 0": (COLUMNS, 0, "Columns 0 is less than 1"),
}


def _stored_then_spoilt(server: RunningServer, case: str) -> tuple[Dataset, str]:
    """A CT stored whole, then one Image Pixel value spoilt in its blob, byte for byte (the
    index still describes it), as if stored before the store refused such values."""
    ds = factories.ct_slice()
    DICOMwebClient(server.dicomweb_url, headers=server.headers).store_instances([ds])
    [stored] = server.archive.find_instances(ds.StudyInstanceUID)
    path = server.archive.blobs.root / stored.blob_key
    data = bytearray(path.read_bytes())
    element, value, _ = BAD_PIXEL_MODULES[case]
    at = data.index(_us_element(element))
    if value is None:  # (0028,000F) is no attribute: Rows is simply not there
        data[at : at + 8] = _us_element(0x000F)
    else:
        data[at + 8 : at + 10] = struct.pack("<H", value)
    path.write_bytes(bytes(data))
    url = (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    return ds, url


@pytest.mark.parametrize("case", BAD_PIXEL_MODULES)
def test_bad_stored_image_pixel_values_are_422_naming_the_attribute(server, case) -> None:
    says = BAD_PIXEL_MODULES[case][2]
    _, url = _stored_then_spoilt(server, case)
    with server.http() as web:
        for resource in ("/frames/1", "/rendered", "/thumbnail", "/frames/1/rendered"):
            response = web.get(url + resource)
            assert (resource, response.status_code) == (resource, 422), response.text
            assert_error_document(response)
            if resource != "/thumbnail":  # a thumbnail says no more than that it has none
                assert says in response.json()["error"], (resource, response.text)
    assert_still_serving(server)


@pytest.mark.parametrize("case", BAD_PIXEL_MODULES)
def test_bad_stored_image_pixel_values_are_tolerated_when_only_a_codec_is_asked(
    server, case
) -> None:
    """Retrieve sends the stored bytes by default; a syntax named that needs decoding is 406
    with the reason, never a 500."""
    says = BAD_PIXEL_MODULES[case][2]
    ds, url = _stored_then_spoilt(server, case)
    with server.http() as web:
        default = web.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert default.status_code == 200, default.text
        assert f"transfer-syntax={ds.file_meta.TransferSyntaxUID}" in default.text
        named = web.get(
            url,
            headers={
                "Accept": 'multipart/related; type="application/dicom"; '
                "transfer-syntax=1.2.840.10008.1.2.5"
            },
        )
        assert named.status_code == 406, named.text
        assert f"its Image Pixel module is incomplete: {says}" in named.json()["error"]
    assert_still_serving(server)
