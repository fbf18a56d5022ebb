"""WADO-RS frames and bulk data as a viewer sees them (PS3.18 10.4.1.1.3, 10.4.1.1.5, 8.7.3)."""

from __future__ import annotations

import email.message
import json
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from tests import factories
from tests.conftest import RunningServer, run_coroutine, store


@pytest.fixture
def server(module_server: RunningServer) -> RunningServer:
    """The module's one server: every test stores instances of its own and reads back those."""
    return module_server


OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OCTETS = 'multipart/related; type="application/octet-stream"'


def instance_url(server, ds: Dataset) -> str:
    return (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def get(server, url: str, accept: str | None = OHIF_FRAMES, **headers: str) -> httpx.Response:
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(url, headers=server.headers | headers, timeout=30)


def frames_of(
    server, ds: Dataset, frame_list: str, accept: str | None = OHIF_FRAMES
) -> httpx.Response:
    return get(server, f"{instance_url(server, ds)}/frames/{frame_list}", accept)


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """Split as OHIF does: the boundary is the body's first `--` line; each part's Content-Type."""
    assert response.status_code == 200, response.text
    body = response.content
    first_line = body.split(b"\r\n", 1)[0]
    assert first_line.startswith(b"--")
    boundary = first_line[2:]
    message = email.message.Message()
    message["Content-Type"] = response.headers["content-type"]
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("boundary") == boundary.decode()
    if "content-length" in response.headers:
        assert int(response.headers["content-length"]) == len(body)
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    found = []
    for chunk in chunks[1:-1]:
        head, _, content = chunk.partition(b"\r\n\r\n")
        lines = head.decode("ascii").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if line)
        found.append((headers["Content-Type"], content))
    return found


def pydicom_frames(ds: Dataset) -> list[bytes]:
    """Encapsulated frames as pydicom splits them; native frames as pixel_array gives them."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return list(
            generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended)
        )
    pixels = ds.pixel_array.reshape(count, *ds.pixel_array.shape[-2:])
    return [frame.tobytes() for frame in pixels]


def decoded_frames(ds: Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return [f.tobytes() for f in ds.pixel_array.reshape(count, *ds.pixel_array.shape[-2:])]


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = json.loads(response.content)
    assert body["status"] == status and body["error"]
    return str(body["error"])


# -- frames as stored -------------------------------------------------------------------------


def test_every_frame_of_every_kind_as_ohif_asks_for_it(server) -> None:
    """One request per frame, then all frames in one: bytes as pydicom has them, each part
    naming the frame's real transfer syntax (native frames: Explicit VR Little Endian)."""
    stored = store(
        server,
        factories.ct_slice(),
        factories.mr_multiframe(),
        factories.jpeg_baseline(),
        factories.jpeg2000(),
        factories.rle_multiframe(),
        factories.jpeg_multiframe(table="basic", fragments_per_frame=2),
        factories.jpeg_multiframe(table="extended"),
        factories.jpeg_multiframe(table="none", fragments_per_frame=2),
    )
    for ds in stored:
        expected = pydicom_frames(ds)
        syntax = ds.file_meta.TransferSyntaxUID
        part_type = f"application/octet-stream; transfer-syntax={syntax}"
        for number, frame in enumerate(expected, start=1):
            assert parts(frames_of(server, ds, str(number))) == [(part_type, frame)]
        every = ",".join(str(n) for n in range(1, len(expected) + 1))
        assert parts(frames_of(server, ds, every)) == [(part_type, f) for f in expected]


def test_frames_come_in_the_order_asked(server) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=6))
    expected = pydicom_frames(ds)
    received = [body for _, body in parts(frames_of(server, ds, "5,1,3,3"))]
    assert received == [expected[4], expected[0], expected[2], expected[2]]


@pytest.mark.parametrize(
    ("make", "asked", "answered"),
    [
        (factories.jpeg_baseline, "image/jpeg", f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"),
        (factories.jpeg2000, "image/jp2", f"image/jp2; transfer-syntax={JPEG2000Lossless}"),
        (factories.jpeg2000, "image/*", f"image/jp2; transfer-syntax={JPEG2000Lossless}"),
        (factories.rle, "image/dicom-rle", f"image/dicom-rle; transfer-syntax={RLELossless}"),
        (factories.rle, "image/x-dicom-rle", f"image/x-dicom-rle; transfer-syntax={RLELossless}"),
    ],
)
def test_compressed_frames_in_their_own_media_type(server, make, asked, answered) -> None:
    (ds,) = store(server, make())
    response = frames_of(server, ds, "1", f'multipart/related; type="{asked}"')
    assert parts(response) == [(answered, pydicom_frames(ds)[0])]
    assert f'type="{answered.split(";")[0]}"' in response.headers["content-type"]


def test_any_media_type_gets_frames_as_stored(server) -> None:
    jpeg, ct = store(server, factories.jpeg_baseline(), factories.ct_slice())
    for accept in ("*/*", None, "multipart/related"):
        assert parts(frames_of(server, jpeg, "1", accept)) == [
            (f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}", pydicom_frames(jpeg)[0])
        ]
        assert parts(frames_of(server, ct, "1", accept)) == [
            (
                f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}",
                pydicom_frames(ct)[0],
            )
        ]


def test_five_hundred_frames_one_by_one_and_all_at_once(server) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=500, rows=8, columns=8))
    expected = pydicom_frames(ds)
    for number in (1, 250, 500):
        ((_, body),) = parts(frames_of(server, ds, str(number), OCTETS))
        assert body == expected[number - 1]
    response = frames_of(server, ds, ",".join(str(n) for n in range(1, 501)), OCTETS)
    assert [body for _, body in parts(response)] == expected
    assert response.headers["content-length"] == str(len(response.content))


LARGE = 4 * 1024 * 1024  # answers past this go from the stored file where the server can


def _without_file_parts(server, url: str, accept: str, **headers: str) -> httpx.Response:
    """The same request answered as under an ASGI server without `ferry.file_parts`."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url=server.base_url) as client:
            return await client.get(url, headers=server.headers | headers | {"Accept": accept})

    return run_coroutine(get)


def test_large_answers_from_the_stored_file_are_the_frames_pydicom_finds(server) -> None:
    native = factories.mr_multiframe(frames=40, rows=256, columns=256)
    jpeg = factories.jpeg_multiframe(frames=8, rows=1024, columns=1024, fragments_per_frame=3)
    store(server, native, jpeg)
    for ds, frame_list in ((native, range(1, 41)), (jpeg, [8, 1, 5, 2, 3, 4, 6, 7])):
        url = f"{instance_url(server, ds)}/frames/{','.join(map(str, frame_list))}"
        answer = get(server, url)
        assert len(answer.content) > LARGE
        expected = [pydicom_frames(ds)[n - 1] for n in frame_list]
        assert [body for _, body in parts(answer)] == expected
        assert parts(_without_file_parts(server, url, OHIF_FRAMES)) == parts(answer)
    pixel_data = bulk_uris(metadata(server, native))["7FE00010"]
    value = b"".join(pydicom_frames(native))
    assert [body for _, body in parts(get(server, pixel_data, OCTETS))] == [value]
    ranged = get(server, pixel_data, "application/octet-stream", Range="bytes=100-4500000")
    assert ranged.status_code == 206 and ranged.content == value[100:4500001]
    streamed = _without_file_parts(
        server, pixel_data, "application/octet-stream", Range="bytes=100-4500000"
    )
    assert streamed.status_code == 206 and streamed.content == ranged.content


def test_one_frame_single_part_with_a_byte_range(server) -> None:
    ct, jpeg = store(server, factories.ct_slice(), factories.jpeg_baseline())
    whole = frames_of(server, ct, "1", "application/octet-stream")
    assert whole.status_code == 200
    assert (
        whole.headers["content-type"]
        == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert whole.content == pydicom_frames(ct)[0]
    part = get(
        server,
        f"{instance_url(server, ct)}/frames/1",
        "application/octet-stream",
        Range="bytes=4-11",
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 4-11/{len(whole.content)}"
    assert part.content == whole.content[4:12]
    image = frames_of(server, jpeg, "1", "image/jpeg")
    assert image.headers["content-type"] == f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"
    assert image.content == pydicom_frames(jpeg)[0]


def test_single_bit_frames_are_byte_aligned(server) -> None:
    from pydicom.pixels import pack_bits

    (ds,) = store(server, factories.single_bit_multiframe(frames=3, rows=5, columns=5))
    received = [body for _, body in parts(frames_of(server, ds, "1,2,3"))]
    assert received == [pack_bits(frame) for frame in ds.pixel_array]


# -- decoded on request -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [OCTETS, f"{OCTETS}; transfer-syntax={ExplicitVRLittleEndian}", "application/octet-stream"],
)
def test_compressed_frames_decoded_when_uncompressed_is_asked(server, accept) -> None:
    (ds,) = store(server, factories.jpeg2000())
    response = frames_of(server, ds, "1", accept)
    native = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    if accept.startswith("multipart"):
        assert parts(response) == [(native, ds.pixel_array.tobytes())]
    else:
        assert response.headers["content-type"] == native
        assert response.content == ds.pixel_array.tobytes()


def test_only_the_asked_frames_of_a_multiframe_are_decoded(server) -> None:
    (ds,) = store(server, factories.rle_multiframe(frames=5))
    expected = decoded_frames(ds)
    received = [body for _, body in parts(frames_of(server, ds, "2,4", OCTETS))]
    assert received == [expected[1], expected[3]]


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_list", ["0", "-1", "1,,2", "1,", ",1", "a", "1.5", "1;2", "%201", "2,0", "1-3"]
)
def test_malformed_frame_lists_are_refused(server, frame_list) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=3))
    assert "frame" in error_of(frames_of(server, ds, frame_list), 400)


def test_too_many_frame_numbers_are_refused(server) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=3))
    message = error_of(frames_of(server, ds, ",".join(["1"] * 10_001)), 400)
    assert "10000" in message


def test_frames_past_the_end_are_not_found(server) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=10))
    assert "no frame 11" in error_of(frames_of(server, ds, "1,11,12"), 404)
    assert "10 frame" in error_of(frames_of(server, ds, "99999999"), 404)


def test_frames_of_what_has_none_are_not_found(server) -> None:
    (pdf,) = store(server, factories.encapsulated_pdf())
    assert "pixel data" in error_of(frames_of(server, pdf, "1"), 404)


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="image/jp2"',
        'multipart/related; type="application/dicom"',
        f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.4.90",
        "image/png",
    ],
)
def test_frames_in_a_form_not_producible_are_not_acceptable(server, accept) -> None:
    ct, jpeg = store(server, factories.ct_slice(), factories.jpeg_multiframe())
    assert "stored as" in error_of(frames_of(server, ct, "1", accept), 406)
    assert "stored as" in error_of(frames_of(server, jpeg, "1,2", accept), 406)


def test_several_frames_need_multipart(server) -> None:
    (ds,) = store(server, factories.mr_multiframe(frames=3))
    assert "multipart" in error_of(frames_of(server, ds, "1,2", "application/octet-stream"), 406)


def test_unknown_instance_and_bad_accept(server) -> None:
    (ds,) = store(server, factories.ct_slice())
    unknown = instance_url(server, ds).rsplit("/", 1)[0] + "/1.2.3.4"
    error_of(get(server, f"{unknown}/frames/1"), 404)
    error_of(frames_of(server, ds, "1", "multipart/related; type="), 400)


# -- bulk data --------------------------------------------------------------------------------


def metadata(server, ds: Dataset) -> dict[str, Any]:
    response = get(server, f"{instance_url(server, ds)}/metadata", "application/dicom+json")
    assert response.status_code == 200, response.text
    return response.json()[0]


def bulk_uris(document: dict[str, Any]) -> dict[str, str]:
    """Every BulkDataURI in a DICOM JSON document, keyed by its path."""
    found: dict[str, str] = {}
    for element in document.values():
        if "BulkDataURI" in element:
            found[element["BulkDataURI"].split("/bulk/", 1)[1]] = element["BulkDataURI"]
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            found |= bulk_uris(item)
    return found


def test_every_bulk_data_uri_resolves_to_its_value(server) -> None:
    (ds,) = store(server, factories.with_bulk_elements())
    expected = {
        "60003000": ds[0x60003000].value,
        "00282000": ds.ICCProfile,
        "54000100/1/54001010": ds.WaveformSequence[1].WaveformData,
        "00091010": ds[0x00091010].value,
        "00480105/0/00081140/0/00282000": (
            ds.OpticalPathSequence[0].ReferencedImageSequence[0].ICCProfile
        ),
        "7FE00010": ds.PixelData,
    }
    uris = bulk_uris(metadata(server, ds))
    assert set(uris) == set(expected)
    for path, uri in uris.items():
        assert [body for _, body in parts(get(server, uri, OCTETS))] == [expected[path]], path
        single = get(server, uri, "application/octet-stream")
        assert single.status_code == 200 and single.content == expected[path], path


def test_bulk_data_byte_ranges(server) -> None:
    (ds,) = store(server, factories.with_bulk_elements())
    uri = bulk_uris(metadata(server, ds))["54000100/1/54001010"]
    value = ds.WaveformSequence[1].WaveformData
    length = len(value)

    def ranged(spec: str, **headers: str) -> httpx.Response:
        return get(server, uri, "application/octet-stream", Range=spec, **headers)

    for spec, start, end in [
        ("bytes=0-9", 0, 10),
        ("bytes=-5", length - 5, length),
        (f"bytes={length - 3}-", length - 3, length),
        ("bytes=10-99999", 10, length),
    ]:
        response = ranged(spec)
        assert response.status_code == 206, spec
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{length}"
        assert response.content == value[start:end]
    unsatisfiable = ranged(f"bytes={length}-")
    assert "past" in error_of(unsatisfiable, 416)
    assert unsatisfiable.headers["content-range"] == f"bytes */{length}"
    assert "byte range" in error_of(ranged("bytes=a-b"), 400)
    assert ranged("bytes=0-1,5-6").content == value  # several ranges: the whole value
    assert ranged("bytes=0-1", **{"If-Range": '"x"'}).content == value
    assert ranged("items=0-1").status_code == 200


def test_pdf_through_its_bulk_data_uri(server) -> None:
    (ds,) = store(server, factories.encapsulated_pdf())
    uri = bulk_uris(metadata(server, ds))["00420011"]
    document = ds.EncapsulatedDocument
    accept = f'multipart/related; type="application/pdf", {OCTETS}'
    assert parts(get(server, uri, accept)) == [("application/pdf", document)]
    assert parts(get(server, uri, OCTETS)) == [("application/octet-stream", document)]
    by_query = get(server, f"{uri}?accept=application/pdf", None)
    assert by_query.headers["content-type"] == "application/pdf"
    assert by_query.content == document
    head = get(server, uri, "application/pdf", Range="bytes=0-4")
    assert head.status_code == 206 and head.content == b"%PDF-"
    assert "application/pdf" in error_of(get(server, uri, "image/png"), 406)


def test_encapsulated_pixel_data_is_its_frames(server) -> None:
    jpeg, j2k = store(server, factories.jpeg_multiframe(frames=3), factories.jpeg2000())
    uri = bulk_uris(metadata(server, jpeg))["7FE00010"]
    part_type = f"application/octet-stream; transfer-syntax={JPEGBaseline8Bit}"
    assert parts(get(server, uri)) == [(part_type, f) for f in pydicom_frames(jpeg)]
    single = bulk_uris(metadata(server, j2k))["7FE00010"]
    decoded = get(server, single, "application/octet-stream")
    assert decoded.content == j2k.pixel_array.tobytes()
    as_stored = get(
        server, single, "application/octet-stream; transfer-syntax=*", Range="bytes=0-3"
    )
    assert as_stored.status_code == 206 and as_stored.content == pydicom_frames(j2k)[0][:4]


def test_video_pixel_data_is_one_stream(server) -> None:
    (ds,) = store(server, factories.mpeg4_video())
    uri = bulk_uris(metadata(server, ds))["7FE00010"]
    stream = pydicom_frames(ds)[0]
    ((part_type, body),) = parts(get(server, uri, 'multipart/related; type="video/mp4"'))
    assert part_type.startswith("video/mp4; transfer-syntax=") and body == stream
    assert "video" in error_of(frames_of(server, ds, "1"), 406)


@pytest.mark.parametrize(
    ("path", "status"),
    [("zz", 400), ("00100011", 404), ("54000100/5/54001010", 404), ("7FE0001", 400)],
)
def test_bulk_data_that_is_not_there(server, path, status) -> None:
    (ds,) = store(server, factories.with_bulk_elements())
    error_of(get(server, f"{instance_url(server, ds)}/bulk/{path}", OCTETS), status)


def test_big_endian_frames_as_stored_or_swapped(server) -> None:
    from pydicom.uid import ExplicitVRBigEndian

    ds = factories.mr_multiframe(frames=3)
    volume = ds.pixel_array
    ds.PixelData = volume.astype(">u2").tobytes()  # OW values are swapped in big endian
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    (stored,) = store(server, ds)
    assert parts(frames_of(server, stored, "2")) == [
        (
            f"application/octet-stream; transfer-syntax={ExplicitVRBigEndian}",
            volume[1].astype(">u2").tobytes(),
        )
    ]
    little = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    swapped = parts(frames_of(server, stored, "2,3", OCTETS))
    assert swapped == [(little, volume[1].tobytes()), (little, volume[2].tobytes())]


def test_a_frame_that_does_not_decode_is_unprocessable_not_unacceptable(server) -> None:
    """406 is about Accept; a stored frame that does not decode is the instance's fault."""
    from pydicom.encaps import encapsulate

    ds = factories.jpeg_baseline()
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not a JPEG stream \xff\xd9"])
    (stored,) = store(server, ds)
    assert "decoded" in error_of(frames_of(server, stored, "1", "application/octet-stream"), 422)
    passthrough = frames_of(server, stored, "1", "image/jpeg")  # as stored: still served
    assert passthrough.status_code == 200
