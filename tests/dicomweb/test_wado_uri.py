"""WADO-URI: objects by query string, as DICOM or rendered (PS3.18 9)."""

from __future__ import annotations

import io
import struct

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from tests import factories
from tests.conftest import RunningServer
from tests.dicomweb.test_rendered import hounsfield, linear, pixels, store


def wado(server, ds: Dataset | None = None, **params: str) -> httpx.Response:
    query: dict[str, str] = {"requestType": "WADO"}
    if ds is not None:
        query |= {
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
        }
    return httpx.get(
        f"{server.base_url}/wado", params=query | params, headers=server.headers, timeout=30
    )


def test_application_dicom_returns_the_stored_file(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = wado(server, ct, contentType="application/dicom")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    (stored,) = server.archive.find_instances(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )
    with server.archive.blobs.open(stored.blob_key) as handle:
        assert response.content == handle.read()
    same = wado(server, ct, contentType="application/dicom", transferSyntax=ExplicitVRLittleEndian)
    assert same.content == response.content
    assert dcmread(io.BytesIO(response.content)).SOPInstanceUID == ct.SOPInstanceUID


def test_anonymize_yes_sends_the_object_de_identified_by_the_basic_profile(server) -> None:
    spec = factories.StudySpec(patient_id="WADO-PAT-9", patient_name="Roe^Richard",
                               accession_number="ACC-W9")  # fmt: skip
    ct = factories.ct_slice(spec=spec)
    store(server, ct)
    first = wado(server, ct, contentType="application/dicom", anonymize="yes")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/dicom"
    assert int(first.headers["content-length"]) == len(first.content)
    copy = dcmread(io.BytesIO(first.content))
    for identifying in (b"WADO-PAT-9", b"Roe^Richard", b"ACC-W9", ct.StudyInstanceUID.encode(),
                        ct.SOPInstanceUID.encode(), b"Referrer"):  # fmt: skip
        assert identifying not in first.content
    assert copy.PatientIdentityRemoved == "YES" and copy.PatientID.startswith("PSN")
    assert copy.LongitudinalTemporalInformationModified == "REMOVED"
    assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID
    assert copy.PixelData == ct.PixelData  # the pixels are the stored ones
    second = wado(server, ct, contentType="application/dicom", anonymize="yes")
    assert dcmread(io.BytesIO(second.content)).PatientID != copy.PatientID  # nothing links them
    transcoded = wado(server, ct, contentType="application/dicom", anonymize="yes",
                      transferSyntax=ImplicitVRLittleEndian)  # fmt: skip
    assert transcoded.status_code == 200
    implicit = dcmread(io.BytesIO(transcoded.content))
    assert implicit.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert b"WADO-PAT-9" not in transcoded.content
    burned = factories.ct_slice(BurnedInAnnotation="YES")
    store(server, burned)
    refused = wado(server, burned, contentType="application/dicom", anonymize="yes")
    assert refused.status_code == 409 and "burned-in annotation" in refused.json()["error"]
    assert wado(server, ct, contentType="application/dicom").status_code == 200  # still up


def test_another_transfer_syntax_is_transcoded(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = wado(server, ct, contentType="application/dicom", transferSyntax=JPEG2000Lossless)
    assert response.status_code == 200, response.text
    assert int(response.headers["content-length"]) == len(response.content)
    received = dcmread(io.BytesIO(response.content))
    assert received.file_meta.TransferSyntaxUID == JPEG2000Lossless
    np.testing.assert_array_equal(received.pixel_array, ct.pixel_array)


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, "1.2.840.10008.1.2.4.999"])
def test_a_transfer_syntax_that_cannot_hold_the_pixels_is_not_acceptable(server, syntax) -> None:
    ct = factories.ct_slice()  # 16-bit signed: no 8-bit JPEG holds it
    store(server, ct)
    response = wado(server, ct, contentType="application/dicom", transferSyntax=syntax)
    assert response.status_code == 406
    assert ExplicitVRLittleEndian in response.json()["error"]


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


@pytest.mark.parametrize(
    "make",
    [factories.rle, factories.jpeg2000, lambda: _implicit(factories.ct_slice())],
    ids=["RLE", "JPEG 2000", "implicit VR"],
)
def test_without_transfer_syntax_the_object_comes_as_explicit_vr_little_endian(
    server, make
) -> None:
    """PS3.18 9.4.2.4: no transferSyntax means Explicit VR Little Endian, decoded if need be."""
    ds = make()
    store(server, ds)
    response = wado(server, ds, contentType="application/dicom")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert int(response.headers["content-length"]) == len(response.content)
    received = dcmread(io.BytesIO(response.content))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_array_equal(received.pixel_array, ds.pixel_array)


def test_star_or_the_stored_syntax_sends_the_stored_bytes(server) -> None:
    ds = factories.rle()
    store(server, ds)
    for syntax in ("*", RLELossless):
        response = wado(server, ds, contentType="application/dicom", transferSyntax=syntax)
        assert response.status_code == 200, (syntax, response.text)
        assert response.content == factories.part10_bytes(ds), syntax
        assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize(
    ("syntax", "status", "says"),
    [
        (MPEG2MPML, 406, "Ferry cannot produce MPEG2"),
        ("1.2.840.10008.1.2.4.999", 406, "Ferry cannot produce"),
        ("JPEG", 400, "transferSyntax 'JPEG' is not a valid UID"),
        ("**", 400, "not a valid UID"),
    ],
)
def test_a_transfer_syntax_that_cannot_be_made_is_refused_with_the_reason(
    server, syntax, status, says
) -> None:
    ds = factories.rle()
    store(server, ds)
    response = wado(server, ds, contentType="application/dicom", transferSyntax=syntax)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_what_cannot_be_decoded_comes_as_stored_and_says_so(server) -> None:
    video = factories.mpeg4_video()
    store(server, video)
    response = wado(server, video, contentType="application/dicom")
    assert response.status_code == 200, response.text
    assert response.content == factories.part10_bytes(video)
    assert "sent as stored" in response.headers["warning"]
    assert video.file_meta.TransferSyntaxUID in response.headers["warning"]


def stored_with_a_damaged_rle_header(server: RunningServer) -> tuple[Dataset, bytes]:
    """An RLE CT stored, then damaged in its blob: the second segment starts past the
    fragment (as if stored before any check). Returns the instance and the blob's bytes."""
    ds = factories.rle()
    store(server, ds)
    [stored] = server.archive.find_instances(ds.StudyInstanceUID)
    path = server.archive.blobs.root / stored.blob_key
    data = bytearray(path.read_bytes())
    *_, fragment = generate_fragments(ds.PixelData)  # after the Basic Offset Table
    at = data.index(fragment[:64])
    data[at + 8 : at + 12] = struct.pack("<I", 100_000)
    path.write_bytes(bytes(data))
    return ds, bytes(data)


def test_stored_pixels_that_do_not_decode_are_unprocessable_by_default(server) -> None:
    ds, damaged = stored_with_a_damaged_rle_header(server)
    response = wado(server, ds, contentType="application/dicom")
    assert response.status_code == 422, response.text
    assert "cannot be decoded" in response.json()["error"]
    as_stored = wado(server, ds, contentType="application/dicom", transferSyntax="*")
    assert as_stored.content == damaged


def test_an_image_is_a_jpeg_by_default(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = wado(server, ct)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    shown = pixels(response).astype(np.float64)
    assert np.abs(shown - linear(hounsfield(ct), 40, 400)).mean() < 2.5


def test_png_with_a_window_gives_the_windowed_values(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = wado(server, ct, contentType="image/png", windowCenter="-100", windowWidth="900")
    assert response.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(pixels(response), linear(hounsfield(ct), -100, 900))


def test_frame_number_region_rows_and_columns(server) -> None:
    mf = factories.mr_multiframe(frames=5, rows=32, columns=32)
    store(server, mf)
    window = {"windowCenter": "1000", "windowWidth": "2000", "contentType": "image/png"}
    third = pixels(wado(server, mf, frameNumber="3", **window))
    expected = linear(mf.pixel_array[2].astype(np.float64), 1000, 2000)
    np.testing.assert_array_equal(third, expected)
    corner = pixels(wado(server, mf, frameNumber="3", region="0.5,0,1,0.5", **window))
    np.testing.assert_array_equal(corner, expected[:16, 16:])
    assert pixels(wado(server, mf, rows="64", **window)).shape == (64, 64)
    assert pixels(wado(server, mf, columns="16", **window)).shape == (16, 16)
    assert pixels(wado(server, mf, rows="8", columns="16", **window)).shape == (8, 8)


def test_image_quality_trades_size(server) -> None:
    ct = factories.ct_slice(rows=128, columns=128)
    store(server, ct)
    low, high = wado(server, ct, imageQuality="5"), wado(server, ct, imageQuality="100")
    assert len(low.content) < len(high.content)


def test_encapsulated_pdf_comes_as_the_document(server) -> None:
    document = factories.minimal_pdf()  # dated by Pillow: made once, compared with itself
    pdf = factories.encapsulated_pdf(document)
    store(server, pdf)
    for params in ({}, {"contentType": "application/pdf"}):
        response = wado(server, pdf, **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/pdf"
        assert response.content == document
    refused = wado(server, pdf, contentType="image/jpeg")
    assert refused.status_code == 406
    assert "application/pdf" in refused.json()["error"]
    fallback = wado(server, pdf, contentType="image/jpeg, application/dicom")
    assert fallback.headers["content-type"] == "application/dicom"


def test_ignored_parameters_are_named_in_a_warning(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = wado(server, ct, annotation="patient", colour="blue", charset="UTF-8")
    assert response.status_code == 200
    assert wado(server, ct, **{"größe\r\n": "x"}).status_code == 200  # named safely in a header
    assert "annotation" in response.headers["warning"]
    assert "colour" in response.headers["warning"]


BAD_WADO_URI = [
    ({"requestType": "WADO-RS"}, 400, "requestType"),
    ({"studyUID": "not-a-uid"}, 400, "studyUID"),
    ({"objectUID": "1.2.3..4"}, 400, "objectUID"),
    ({"anonymize": "yes"}, 400, "anonymize=yes is for contentType=application/dicom"),
    ({"anonymize": "yes", "contentType": "image/jpeg"}, 400, "application/dicom"),
    ({"anonymize": "no"}, 400, "anonymize"),
    ({"windowCenter": "40"}, 400, "windowWidth"),
    ({"windowCenter": "40", "windowWidth": "0"}, 400, "width"),
    ({"windowCenter": "40", "windowWidth": "-3"}, 400, "width"),
    ({"windowCenter": "middle", "windowWidth": "400"}, 400, "not a number"),
    ({"rows": "0"}, 400, "1 and 4096"),
    ({"columns": "100000"}, 400, "1 and 4096"),
    ({"rows": "tall"}, 400, "whole number"),
    ({"region": "0,0,1"}, 400, "x1,y1,x2,y2"),
    ({"region": "0.5,0,0.2,1"}, 400, "x1 < x2"),
    ({"region": "0,0,1.5,1"}, 400, "region"),
    ({"frameNumber": "0"}, 400, "frameNumber"),
    ({"frameNumber": "2"}, 404, "past the last frame"),
    ({"imageQuality": "0"}, 400, "quality"),
    ({"imageQuality": "101"}, 400, "quality"),
    ({"contentType": "application/zip"}, 406, "image/jpeg"),
    ({"contentType": "image/"}, 400, "contentType"),
    ({"transferSyntax": "1.2.x"}, 400, "transferSyntax"),
]


def test_bad_parameters_are_refused_with_a_reason(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    for params, status, words in BAD_WADO_URI:
        response = wado(server, ct, **params)
        assert response.status_code == status, (params, response.text)
        assert words in response.json()["error"], (params, response.json())


@pytest.mark.parametrize("missing", ["requestType", "studyUID", "seriesUID", "objectUID"])
def test_missing_required_parameters_are_refused(server, missing) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    query = {
        "requestType": "WADO",
        "studyUID": ct.StudyInstanceUID,
        "seriesUID": ct.SeriesInstanceUID,
        "objectUID": ct.SOPInstanceUID,
    }
    del query[missing]
    response = httpx.get(f"{server.base_url}/wado", params=query, headers=server.headers)
    assert response.status_code == 400
    assert missing in response.json()["error"]


def test_unknown_object_is_not_found(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = httpx.get(
        f"{server.base_url}/wado",
        params={
            "requestType": "WADO",
            "studyUID": ct.StudyInstanceUID,
            "seriesUID": ct.SeriesInstanceUID,
            "objectUID": generate_uid(),
        },
        headers=server.headers,
    )
    assert response.status_code == 404


def test_anonymize_of_a_blob_damaged_on_disk_is_unprocessable_not_a_crash(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    (stored,) = server.archive.find_instances(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )
    with server.archive.blobs.open(stored.blob_key) as handle:
        path = handle.name
    with open(path, "r+b") as blob:  # cut inside the pixel data's element header
        blob.truncate(blob.seek(0, 2) - len(ct.PixelData) - 6)
    damaged = wado(server, ct, contentType="application/dicom", anonymize="yes",
                   transferSyntax="*")  # fmt: skip
    assert damaged.status_code == 422, damaged.text
    assert "cannot de-identify the object" in damaged.json()["error"]
    other = factories.ct_slice()
    store(server, other)
    assert wado(server, other, contentType="application/dicom", anonymize="yes").status_code == 200
