"""What a DICOMweb client gets back for each kind of data stored (PS3.18 10.4, 10.5, F.2)."""

from __future__ import annotations

import email.message
import io
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from tests import factories
from tests.conftest import store

BOUNDARY = "ferry-coverage-3f9c1d7e5b"
DICOM = 'multipart/related; type="application/dicom"'
DICOM_ANY = DICOM + "; transfer-syntax=*"


def stow(server, *payloads: bytes) -> httpx.Response:
    """POST Part 10 (or bare) bytes exactly as given, one part each."""
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + b"\r\n"
        for payload in payloads
    )
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body + f"--{BOUNDARY}--\r\n".encode(),
        headers={"Content-Type": f"{DICOM}; boundary={BOUNDARY}", **server.headers},
    )
    assert response.status_code == 200, response.text
    return response


def get(server, path: str, accept: str = DICOM_ANY, **headers: str) -> httpx.Response:
    url = path if path.startswith("http") else server.dicomweb_url + path
    return httpx.get(url, headers={"Accept": accept, **server.headers, **headers})


def _param(header: str, name: str) -> str:
    message = email.message.Message()
    message["Content-Type"] = header
    value = message.get_param(name)
    assert isinstance(value, str), f"no {name} in {header!r}"
    return value


def split_multipart(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(part Content-Type, body) of each part of a multipart/related response."""
    assert response.status_code == 200, response.text
    boundary = _param(response.headers["content-type"], "boundary").encode()
    chunks = (b"\r\n" + response.content).split(b"\r\n--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode("ascii").split("\r\n") if line)
        parts.append((headers["Content-Type"], body))
    return parts


def instance_path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def retrieve_one(server, ds: Dataset, accept: str = DICOM_ANY) -> tuple[str, bytes]:
    parts = split_multipart(get(server, instance_path(ds), accept))
    assert len(parts) == 1
    return parts[0]


def metadata(server, ds: Dataset) -> dict[str, Any]:
    response = get(server, instance_path(ds) + "/metadata", "application/dicom+json")
    assert response.status_code == 200, response.text
    (document,) = response.json()
    return document


def values(document: dict[str, Any], tag: str) -> list[Any]:
    return document[tag]["Value"]


# -- stored and returned byte for byte ------------------------------------------------------


def _check_pixels_bulk(server, ds: Dataset, document: dict[str, Any]) -> None:
    assert document["7FE00010"]["BulkDataURI"].startswith(server.dicomweb_url + "/studies/")
    assert "InlineBinary" not in document["7FE00010"]


def _check_pdf(server, ds: Dataset, document: dict[str, Any]) -> None:
    element = document["00420011"]
    assert element["vr"] == "OB"
    assert element["BulkDataURI"].startswith(server.dicomweb_url + instance_path(ds))
    assert values(document, "00420012") == ["application/pdf"]


def _check_multiframe(server, ds: Dataset, document: dict[str, Any]) -> None:
    _check_pixels_bulk(server, ds, document)
    assert values(document, "00280008") == [10]


def _check_private(server, ds: Dataset, document: dict[str, Any]) -> None:
    assert document["00090010"] == {"vr": "LO", "Value": [factories.PRIVATE_CREATOR]}
    assert values(document, "00091001") == ["Ferry private text"]
    assert document["00091002"]["vr"] == "OB"
    assert document["00091002"]["BulkDataURI"].startswith(server.dicomweb_url + "/studies/")
    (private_item,) = values(document, "00091003")
    assert values(private_item, "00080104") == ["Localizer"]
    references = values(document, "00081140")  # ReferencedImageSequence
    assert [values(r, "00081155") for r in references] == [
        [r.ReferencedSOPInstanceUID] for r in ds.ReferencedImageSequence
    ]
    (purpose,) = values(references[0], "0040A170")  # nested PurposeOfReferenceCodeSequence
    assert values(purpose, "00080100") == ["121311"]


KINDS: dict[str, tuple[Callable[[], Dataset], str, Callable[..., None]]] = {
    "ct": (factories.ct_slice, ExplicitVRLittleEndian, _check_pixels_bulk),
    "multiframe": (factories.mr_multiframe, ExplicitVRLittleEndian, _check_multiframe),
    "jpeg-baseline": (factories.jpeg_baseline, JPEGBaseline8Bit, _check_pixels_bulk),
    "jpeg2000": (factories.jpeg2000, JPEG2000Lossless, _check_pixels_bulk),
    "rle": (factories.rle, RLELossless, _check_pixels_bulk),
    "pdf": (factories.encapsulated_pdf, ExplicitVRLittleEndian, _check_pdf),
    "private-and-sequences": (factories.with_private_tags, ExplicitVRLittleEndian, _check_private),
}


@pytest.mark.parametrize("kind", KINDS)
def test_instance_is_returned_byte_for_byte_in_its_transfer_syntax(server, kind) -> None:
    make, transfer_syntax, check_metadata = KINDS[kind]
    ds = make()
    sent = factories.part10_bytes(ds)
    stow(server, sent)
    content_type, received = retrieve_one(server, ds)
    assert _param(content_type, "transfer-syntax") == transfer_syntax
    assert received == sent
    check_metadata(server, ds, metadata(server, ds))


def test_bulk_data_uri_in_metadata_resolves_to_the_value(server) -> None:
    ds = factories.encapsulated_pdf()
    sent = factories.part10_bytes(ds)
    stow(server, sent)
    uri = metadata(server, ds)["00420011"]["BulkDataURI"]
    parts = split_multipart(get(server, uri, 'multipart/related; type="application/octet-stream"'))
    assert [body for _, body in parts] == [dcmread(io.BytesIO(sent)).EncapsulatedDocument]


def test_instance_sent_without_file_meta_gets_one_in_front_of_the_bytes_sent(server) -> None:
    ds = factories.ct_slice()
    sent = factories.without_file_meta_bytes(ds)
    stow(server, sent)
    content_type, received = retrieve_one(server, ds)
    assert _param(content_type, "transfer-syntax") == ImplicitVRLittleEndian
    assert received[:132] == b"\x00" * 128 + b"DICM"
    meta_end = 132 + 12 + int.from_bytes(received[140:144], "little")  # after (0002,0000) UL
    assert received[meta_end:] == sent
    read = dcmread(io.BytesIO(received))
    assert read.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert read.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert read.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert read.PixelData == ds.PixelData


def test_odd_length_value_is_stored_and_returned_as_sent(server) -> None:
    sent = factories.odd_length_value_bytes()
    ds = dcmread(io.BytesIO(sent))
    stow(server, sent)
    content_type, received = retrieve_one(server, ds)
    assert _param(content_type, "transfer-syntax") == ExplicitVRLittleEndian
    assert received == sent
    assert values(metadata(server, ds), "00081030") == ["ODD VALUE"]


# -- character sets --------------------------------------------------------------------------


def joined_pn(element: dict[str, Any]) -> str:
    """A DICOM JSON PN value (PS3.18 F.2.2) back in its `Alphabetic=Ideographic=Phonetic` form."""
    assert element["vr"] == "PN"
    (name,) = element["Value"]
    assert set(name) <= {"Alphabetic", "Ideographic", "Phonetic"}
    groups = [name.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def search_studies(server, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.dicomweb_url}/studies",
        params=params,
        headers={"Accept": "application/dicom+json", **server.headers},
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("charset", factories.CHARSET_NAMES)
def test_names_in_each_character_set_come_back_as_utf8(server, charset) -> None:
    expected_name = factories.CHARSET_NAMES[charset]
    ds = factories.with_charset(charset)
    store(server, ds)

    (found,) = search_studies(server, PatientID=ds.PatientID)
    assert joined_pn(found["00100010"]) == expected_name
    assert values(found, "00081030") == [factories.CHARSET_DESCRIPTIONS[charset]]

    for group in expected_name.split("="):  # each of alphabetic, ideographic, phonetic
        (by_name,) = search_studies(server, PatientName=group[:3] + "*")
        assert values(by_name, "0020000D") == [ds.StudyInstanceUID]

    response = get(server, f"/studies/{ds.StudyInstanceUID}/metadata", "application/dicom+json")
    assert response.headers["content-type"].startswith("application/dicom+json")
    (document,) = json.loads(response.content.decode("utf-8"))  # F.2: UTF-8, strictly
    assert joined_pn(document["00100010"]) == expected_name
    assert values(document, "00081030") == [factories.CHARSET_DESCRIPTIONS[charset]]


# -- Accept handling for retrieve ------------------------------------------------------------

# MPEG2 Main Profile: nothing Ferry stores as JPEG can be produced in it.
UNPRODUCIBLE = DICOM + "; transfer-syntax=1.2.840.10008.1.2.4.100"


@pytest.mark.parametrize(
    "accept",
    [
        DICOM_ANY,
        "*/*",
        f"{DICOM}; transfer-syntax={JPEGBaseline8Bit}",
        f"{UNPRODUCIBLE}, {DICOM}; transfer-syntax={JPEGBaseline8Bit}; q=0.5",
        f"application/pdf, {UNPRODUCIBLE}; q=0.9, {DICOM_ANY}; q=0.1",
    ],
    ids=["any-syntax", "star-star", "stored-syntax", "q-second", "q-third"],
)
def test_retrieve_answers_with_the_stored_syntax_when_any_choice_allows(server, accept) -> None:
    ds = factories.jpeg_baseline()
    sent = factories.part10_bytes(ds)
    stow(server, sent)
    content_type, received = retrieve_one(server, ds, accept)
    assert _param(content_type, "transfer-syntax") == JPEGBaseline8Bit
    assert received == sent


@pytest.mark.parametrize(
    ("accept", "message"),
    [(UNPRODUCIBLE, "can be produced"), ("application/pdf", "multipart/related")],
    ids=["unstored-syntax", "pdf"],
)
def test_retrieve_refuses_what_it_cannot_produce_with_406(server, accept, message) -> None:
    ds = factories.jpeg_baseline()
    store(server, ds)
    for path in (f"/studies/{ds.StudyInstanceUID}", instance_path(ds)):
        response = get(server, path, accept)
        assert response.status_code == 406
        assert message in response.json()["error"]


def test_unknown_uids_are_404_at_every_level(server) -> None:
    ds = factories.ct_slice()
    store(server, ds)
    study, series, unknown = ds.StudyInstanceUID, ds.SeriesInstanceUID, generate_uid()
    for path in (
        f"/studies/{unknown}",
        f"/studies/{unknown}/metadata",
        f"/studies/{study}/series/{unknown}",
        f"/studies/{study}/series/{unknown}/metadata",
        f"/studies/{study}/series/{series}/instances/{unknown}",
        f"/studies/{study}/series/{series}/instances/{unknown}/metadata",
        f"/studies/{unknown}/series/{series}/instances/{ds.SOPInstanceUID}",
    ):
        accept = "application/dicom+json" if path.endswith("/metadata") else DICOM_ANY
        response = get(server, path, accept)
        assert response.status_code == 404, path
        assert "not found" in response.json()["error"]


@pytest.mark.parametrize(
    ("accept", "status"),
    [("application/dicom+json", 200), ("application/json", 200), ("application/xml", 406)],
)
def test_metadata_accept(server, accept, status) -> None:
    ds = factories.ct_slice()
    store(server, ds)
    response = get(server, f"/studies/{ds.StudyInstanceUID}/metadata", accept)
    assert response.status_code == status
    if status == 200:
        assert values(response.json()[0], "00080018") == [ds.SOPInstanceUID]


def test_series_metadata_etag_revalidates_until_the_series_changes(server) -> None:
    spec = factories.StudySpec()
    first = factories.ct_slice(spec=spec)
    store(server, first)
    path = f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/metadata"
    response = get(server, path, "application/dicom+json")
    etag = response.headers["etag"]
    assert len(response.json()) == 1

    unchanged = get(server, path, "application/dicom+json", **{"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    store(server, factories.ct_slice(spec=replace(spec, instance_number=2)))
    changed = get(server, path, "application/dicom+json", **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert len(changed.json()) == 2


# -- DELETE ----------------------------------------------------------------------------------


def _study_counts(server, study_uid: str) -> tuple[int, int] | None:
    found = search_studies(server, StudyInstanceUID=study_uid)
    if not found:
        return None
    (study,) = found
    return values(study, "00201206")[0], values(study, "00201208")[0]


def _series_counts(server, study_uid: str) -> list[int]:
    response = get(server, f"/studies/{study_uid}/series", "application/dicom+json")
    return sorted(values(series, "00201209")[0] for series in response.json())


def test_delete_instance_then_series_then_last_instance(server) -> None:
    instances = factories.study(n_series=2, per_series=2)
    store(server, *instances)
    study_uid = instances[0].StudyInstanceUID
    blobs = server.archive.blobs
    assert _study_counts(server, study_uid) == (2, 4)
    assert len(list(blobs.iter_keys())) == 4

    gone = instances[0]
    assert (
        httpx.delete(server.dicomweb_url + instance_path(gone), headers=server.headers).status_code
        == 204
    )
    assert _study_counts(server, study_uid) == (2, 3)
    assert len(list(blobs.iter_keys())) == 3
    assert get(server, instance_path(gone)).status_code == 404
    assert _series_counts(server, study_uid) == [1, 2]

    second = instances[2]
    series_path = f"/studies/{study_uid}/series/{second.SeriesInstanceUID}"
    assert (
        httpx.delete(server.dicomweb_url + series_path, headers=server.headers).status_code == 204
    )
    assert _study_counts(server, study_uid) == (1, 1)
    assert _series_counts(server, study_uid) == [1]
    assert len(list(blobs.iter_keys())) == 1
    assert get(server, series_path).status_code == 404

    last = instances[1]
    assert (
        httpx.delete(server.dicomweb_url + instance_path(last), headers=server.headers).status_code
        == 204
    )
    assert _study_counts(server, study_uid) is None
    assert list(blobs.iter_keys()) == []
    assert get(server, f"/studies/{study_uid}").status_code == 404
