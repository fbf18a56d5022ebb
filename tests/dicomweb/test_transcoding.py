"""WADO-RS retrieve in a requested transfer syntax (PS3.18 8.7.3, 8.7.8; PS3.5 Annex A)."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, parse_basic_offsets
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from archive.transcoding import transcoding_table
from tests import factories
from tests.conftest import RunningServer, store
from tests.dicomweb.test_wado_uri import stored_with_a_damaged_rle_header


@pytest.fixture
def server(module_server: RunningServer) -> RunningServer:
    """The module's one server: every test stores instances of its own and reads back those."""
    return module_server


DICOM = 'multipart/related; type="application/dicom"'
PRODUCIBLE = transcoding_table()[ExplicitVRLittleEndian]


def accept(*syntaxes: str) -> str:
    """One media range per syntax, in order, with falling q-values when there are several."""
    weights = (
        [""] if len(syntaxes) == 1 else [f"; q={1 - i / 10:.1f}" for i in range(len(syntaxes))]
    )
    pairs = zip(syntaxes, weights, strict=True)
    return ", ".join(f"{DICOM}; transfer-syntax={syntax}{q}" for syntax, q in pairs)


def instance_path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get(server, path: str, accept_value: str) -> httpx.Response:
    return httpx.get(
        server.dicomweb_url + path,
        headers={"Accept": accept_value, **server.headers},
        timeout=30,
    )


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """Split a multipart/related body by hand, to judge the server's framing independently."""
    assert response.status_code == 200, response.text
    boundary = re.search(r"boundary=([^;\s]+)", response.headers["content-type"]).group(1)
    chunks = response.content.split(b"--" + boundary.strip('"').encode())
    found = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        content_type = re.search(rb"Content-Type: ([^\r\n]+)", head).group(1).decode()
        found.append((content_type, body.removesuffix(b"\r\n")))
    assert chunks[-1].startswith(b"--")
    return found


def retrieve(server, ds: Dataset, syntax: str) -> tuple[str, Dataset]:
    (part,) = parts(get(server, instance_path(ds), accept(syntax)))
    return part[0], dcmread(io.BytesIO(part[1]))


def sent_syntax(content_type: str) -> str:
    return re.search(r"transfer-syntax=([0-9.]+)", content_type).group(1)


def needs(*syntaxes: str) -> None:
    missing = [s for s in syntaxes if s not in PRODUCIBLE]
    if missing:
        pytest.skip(f"no encoder installed for {missing}")


def grey_8bit() -> Dataset:
    ds = factories.rgb_secondary_capture(48, 64)
    grey = (factories.palette_indices(48, 64) // 2 + 40).astype(np.uint8)
    ds.set_pixel_data(grey, "MONOCHROME2", 8, generate_instance_uid=False)
    return ds


def mean_absolute_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# -- lossless round trips -------------------------------------------------------------------

LOSSLESS = [
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
]


@pytest.mark.parametrize("target", LOSSLESS, ids=lambda uid: uid.name)
def test_ct_series_comes_back_pixel_for_pixel_in_a_lossless_syntax(server, target) -> None:
    needs(target)
    first = factories.ct_slice()
    second = factories.ct_slice(spec=factories.StudySpec(
        study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, instance_number=2
    ))  # fmt: skip
    store(server, first, second)
    response = get(server, f"/studies/{first.StudyInstanceUID}", accept(target))
    assert "content-length" not in response.headers  # made as it goes: chunked
    received = {}
    for content_type, body in parts(response):
        assert sent_syntax(content_type) == target
        ds = dcmread(io.BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == target
        received[ds.SOPInstanceUID] = ds
    for original in (first, second):
        back = received[original.SOPInstanceUID]
        assert np.array_equal(back.pixel_array, original.pixel_array)
        assert back.PatientName == original.PatientName
        assert "LossyImageCompression" not in back
        if target.is_compressed:
            assert back["PixelData"].is_undefined_length
            assert back.PhotometricInterpretation == "MONOCHROME2"


def test_multiframe_gets_one_fragment_per_frame_and_a_basic_offset_table(server) -> None:
    needs(JPEG2000Lossless)
    ds = factories.mr_multiframe(frames=4)
    store(server, ds)
    _, back = retrieve(server, ds, JPEG2000Lossless)
    value = DicomBytesIO(back.PixelData)
    value.is_little_endian = True
    offsets = parse_basic_offsets(value)
    frames = list(generate_frames(back.PixelData, number_of_frames=4))
    assert len(offsets) == len(frames) == 4 and offsets[0] == 0
    assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_colour_goes_to_jpeg_2000_through_the_reversible_transform(server) -> None:
    needs(JPEG2000Lossless, RLELossless)
    planar = factories.rgb_secondary_capture(planar_configuration=1)
    store(server, planar)
    _, back = retrieve(server, planar, JPEG2000Lossless)
    assert back.PhotometricInterpretation == "YBR_RCT"
    assert np.array_equal(back.pixel_array, planar.pixel_array)
    _, rle = retrieve(server, planar, RLELossless)
    assert (rle.PhotometricInterpretation, rle.PlanarConfiguration) == ("RGB", 0)
    assert np.array_equal(rle.pixel_array, planar.pixel_array)


# -- compressed stored, native sent --------------------------------------------------------


def test_jpeg_baseline_stored_is_decoded_as_pydicom_decodes_it(server) -> None:
    ds = factories.jpeg_baseline()
    store(server, ds)
    content_type, back = retrieve(server, ds, ExplicitVRLittleEndian)
    assert sent_syntax(content_type) == ExplicitVRLittleEndian
    assert not back["PixelData"].is_undefined_length
    assert np.array_equal(back.pixel_array, ds.pixel_array)
    assert back.LossyImageCompression == "01"  # decoding does not undo the loss (C.7.6.1.1.5)
    assert back.LossyImageCompressionMethod == "ISO_10918_1"


def test_colour_jpeg_stored_is_sent_as_rgb(server) -> None:
    ds = factories.ybr_jpeg()
    store(server, ds)
    _, back = retrieve(server, ds, ExplicitVRLittleEndian)
    assert (back.PhotometricInterpretation, back.PlanarConfiguration) == ("RGB", 0)
    assert np.array_equal(back.pixel_array, ds.pixel_array)


@pytest.mark.parametrize("make", [factories.jpeg2000, factories.rle], ids=["j2k", "rle"])
def test_lossless_stored_is_sent_native_with_the_original_pixels(server, make) -> None:
    ds = make()
    store(server, ds)
    content_type, back = retrieve(server, ds, ExplicitVRLittleEndian)
    assert sent_syntax(content_type) == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, factories.ct_slice().pixel_array)  # same gradient
    assert "LossyImageCompression" not in back


def test_dicomweb_client_retrieves_an_instance_as_jpeg_2000(server, client) -> None:
    needs(JPEG2000Lossless)
    ds = factories.ct_slice()
    store(server, ds)
    back = client.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", JPEG2000Lossless),),
    )
    assert back.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.array_equal(back.pixel_array, ds.pixel_array)


# -- lossy, only when named -----------------------------------------------------------------

LOSSY_CASES = [
    (JPEGBaseline8Bit, grey_8bit, "MONOCHROME2", "ISO_10918_1"),
    (JPEGBaseline8Bit, factories.rgb_secondary_capture, "YBR_FULL_422", "ISO_10918_1"),
    (JPEGExtended12Bit, factories.cr_monochrome1, "MONOCHROME1", "ISO_10918_1"),
    (JPEGLSNearLossless, factories.ct_slice, "MONOCHROME2", "ISO_14495_1"),
    (JPEG2000, factories.ct_slice, "MONOCHROME2", "ISO_15444_1"),
    (JPEG2000, factories.rgb_secondary_capture, "YBR_ICT", "ISO_15444_1"),
    (HTJ2K, factories.ct_slice, "MONOCHROME2", "ISO_15444_15"),
]


@pytest.mark.parametrize(
    ("target", "make", "photometric", "method"),
    LOSSY_CASES,
    ids=[f"{t.name}-{m.__name__}-{p}" for t, m, p, _ in LOSSY_CASES],
)
def test_lossy_syntax_asked_by_name_gives_a_close_marked_image(
    server, target, make, photometric, method
) -> None:
    needs(target)
    ds = make()
    store(server, ds)
    content_type, back = retrieve(server, ds, target)
    assert sent_syntax(content_type) == target
    assert back.PhotometricInterpretation == photometric
    assert back.pixel_array.shape == ds.pixel_array.shape
    assert mean_absolute_error(back.pixel_array, ds.pixel_array) < 3
    assert back.LossyImageCompression == "01"
    assert back.LossyImageCompressionMethod == method
    assert float(back.LossyImageCompressionRatio) > 0


# -- negotiation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_value", "words"),
    [
        (accept(JPEGBaseline8Bit), ["Explicit VR Little Endian", JPEGBaseline8Bit, "16 bits"]),
        (accept("1.2.3.4"), ["'1.2.3.4' is not a transfer syntax UID"]),
        (accept("1.2..840"), ["'1.2..840' is not a transfer syntax UID"]),
        (accept("JPEG"), ["'JPEG' is not a transfer syntax UID"]),
        (accept("1.2.840.10008.1.2.4.100"), ["cannot produce", "MPEG2"]),
    ],
    ids=["baseline-for-16-bit", "unknown-uid", "malformed-uid", "not-a-uid", "mpeg2"],
)
def test_what_cannot_be_produced_is_406_with_the_reason(server, accept_value, words) -> None:
    ds = factories.ct_slice()
    store(server, ds)
    for path in (f"/studies/{ds.StudyInstanceUID}", instance_path(ds)):
        response = get(server, path, accept_value)
        assert response.status_code == 406, response.text
        for word in words:
            assert word in response.json()["error"]


def test_q_values_decide_between_producible_syntaxes(server) -> None:
    needs(RLELossless, JPEG2000Lossless)
    ds = factories.ct_slice()
    store(server, ds)
    ranges = f"{DICOM}; transfer-syntax={JPEG2000Lossless}; q=0.5, " + accept(RLELossless)
    (part,) = parts(get(server, instance_path(ds), ranges))
    assert sent_syntax(part[0]) == RLELossless


def test_a_syntax_one_instance_cannot_take_passes_to_the_next_for_all(server) -> None:
    needs(JPEGBaseline8Bit, JPEG2000Lossless)
    ct = factories.ct_slice()
    grey = grey_8bit()
    grey.StudyInstanceUID = ct.StudyInstanceUID
    store(server, ct, grey)
    response = get(
        server,
        f"/studies/{ct.StudyInstanceUID}",
        accept(JPEGBaseline8Bit, "1.2.3", JPEG2000Lossless),
    )
    found = parts(response)
    assert [sent_syntax(content_type) for content_type, _ in found] == [JPEG2000Lossless] * 2


@pytest.mark.parametrize("accept_value", [f"{DICOM}; transfer-syntax=*", "*/*", "multipart/*"])
def test_any_syntax_sends_the_stored_bytes(server, accept_value) -> None:
    ds = factories.rle()
    store(server, ds)
    response = get(server, instance_path(ds), accept_value)
    ((content_type, body),) = parts(response)
    assert sent_syntax(content_type) == RLELossless
    assert body == factories.part10_bytes(ds)
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("accept_value", [DICOM, "multipart/related"])
def test_no_syntax_named_sends_explicit_vr_little_endian(server, accept_value) -> None:
    """PS3.18 8.7.3.5.2 (since 2016c): application/dicom defaults to Explicit VR Little Endian."""
    compressed, implicit = factories.rle(), _implicit(factories.ct_slice())
    implicit.StudyInstanceUID = compressed.StudyInstanceUID
    store(server, compressed, implicit)
    response = get(server, f"/studies/{compressed.StudyInstanceUID}", accept_value)
    found = parts(response)
    assert [sent_syntax(content_type) for content_type, _ in found] == [ExplicitVRLittleEndian] * 2
    by_uid = {ds.SOPInstanceUID: ds for ds in (compressed, implicit)}
    for _, body in found:
        back = dcmread(io.BytesIO(body))
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(back.pixel_array, by_uid[back.SOPInstanceUID].pixel_array)


def test_what_cannot_be_decoded_goes_as_stored_by_default(server) -> None:
    video, ct = factories.mpeg4_video(), factories.ct_slice()
    ct.StudyInstanceUID = video.StudyInstanceUID
    store(server, video, ct)
    found = parts(get(server, f"/studies/{video.StudyInstanceUID}", DICOM))
    syntaxes = {dcmread(io.BytesIO(body)).SOPInstanceUID: sent_syntax(t) for t, body in found}
    assert syntaxes == {
        video.SOPInstanceUID: video.file_meta.TransferSyntaxUID,
        ct.SOPInstanceUID: ExplicitVRLittleEndian,
    }


def test_pixels_that_do_not_decode_are_unprocessable_by_default(server) -> None:
    """The default asks for decoding: damaged stored pixels are a 422 before the answer
    starts, not a 500; asked as stored, the bytes go out."""
    ds, damaged = stored_with_a_damaged_rle_header(server)
    path = f"/studies/{ds.StudyInstanceUID}"
    refused = get(server, path, DICOM)
    assert refused.status_code == 422, refused.text
    assert "cannot be decoded" in refused.json()["error"]
    ((_, body),) = parts(get(server, path, f"{DICOM}; transfer-syntax=*"))
    assert body == damaged


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def test_palette_colour_is_never_made_lossy(server) -> None:
    needs(JPEGBaseline8Bit, JPEGLSLossless)
    ds = factories.palette_color()
    store(server, ds)
    assert get(server, instance_path(ds), accept(JPEGBaseline8Bit)).status_code == 406
    _, back = retrieve(server, ds, JPEGLSLossless)
    assert back.PhotometricInterpretation == "PALETTE COLOR"
    assert np.array_equal(back.pixel_array, ds.pixel_array)


# -- data sets without pixels ---------------------------------------------------------------


@pytest.mark.parametrize("target", [ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit])
def test_pdf_is_re_encoded_under_the_syntax_asked_for(server, target) -> None:
    ds = factories.encapsulated_pdf()
    store(server, ds)
    content_type, back = retrieve(server, ds, target)
    assert sent_syntax(content_type) == target
    assert back.file_meta.TransferSyntaxUID == target
    length = ds.EncapsulatedDocumentLength  # the value is padded to even length on the wire
    assert back.EncapsulatedDocument[:length] == ds.EncapsulatedDocument
    assert back.DocumentTitle == ds.DocumentTitle
    assert "LossyImageCompression" not in back
