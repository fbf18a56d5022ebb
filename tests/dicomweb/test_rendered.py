"""Rendered images and thumbnails, checked pixel by pixel (PS3.18 10.4.1.1.6, 10.4.3, 8.3.5.1).

Expected display values are computed here from the stored values with the formulas of PS3.3
C.11.2.1.2, independently of the server's code; PNG is lossless, so they must match exactly.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicomweb.rendering import Rendered
from dicomweb.thumbnails import ThumbnailCache
from tests import factories
from tests.conftest import RunningServer, store


@pytest.fixture
def server(module_server: RunningServer) -> RunningServer:
    """The module's one server: every test stores instances of its own and renders those (the
    thumbnail cache's tests, which look at the whole cache folder, have servers of their own)."""
    return module_server


PNG = {"Accept": "image/png"}


def url(server, ds: Dataset, level: str = "instance", resource: str = "rendered") -> str:
    path = f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}"
    if level in ("series", "instance"):
        path += f"/series/{ds.SeriesInstanceUID}"
    if level == "instance":
        path += f"/instances/{ds.SOPInstanceUID}"
    return f"{path}/{resource}"


def get(
    server, address: str, headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    return httpx.get(address, params=params, headers=server.headers | (headers or PNG), timeout=30)


def pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, to 0-255."""
    y = np.where(
        x <= center - 0.5 - (width - 1) / 2,
        0.0,
        np.where(x > center - 0.5 + (width - 1) / 2, 1.0, (x - (center - 0.5)) / (width - 1) + 0.5),
    )
    return np.rint(y * 255)


def linear_exact(x: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.rint(np.clip((x - center) / width + 0.5, 0, 1) * 255)


def sigmoid(x: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.rint(255 / (1 + np.exp(-4 * (x - center) / width)))


def hounsfield(ds: Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# -- grayscale -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "formula"),
    [("linear", linear), ("linear-exact", linear_exact), ("sigmoid", sigmoid)],
)
def test_ct_window_from_the_request_gives_the_windowed_values(server, function, formula) -> None:
    ct = factories.ct_slice()
    assert ct.PixelRepresentation == 1 and ct.RescaleIntercept == -1024
    store(server, ct)
    shown = pixels(get(server, url(server, ct), window=f"40,400,{function}"))
    expected = formula(hounsfield(ct), 40, 400)
    assert shown.shape == (64, 64)
    np.testing.assert_array_equal(shown, expected)
    assert 0 < shown.mean() < 255  # the window crosses the image: neither all black nor white


def test_ct_without_window_uses_the_datasets_window(server) -> None:
    ct = factories.ct_slice(WindowCenter=[-600, 40], WindowWidth=[1500, 400])
    store(server, ct)
    shown = pixels(get(server, url(server, ct)))
    np.testing.assert_array_equal(shown, linear(hounsfield(ct), -600, 1500))


def test_jpeg_is_the_default_and_close_to_the_windowed_values(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = get(server, url(server, ct), headers={"Accept": "*/*"}, window="0,1000,linear")
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    shown = pixels(response).astype(np.float64)
    assert np.abs(shown - linear(hounsfield(ct), 0, 1000)).mean() < 2.5


def test_monochrome1_is_inverted(server) -> None:
    cr = factories.cr_monochrome1()
    store(server, cr)
    shown = pixels(get(server, url(server, cr)))
    expected = 255 - linear(cr.pixel_array.astype(np.float64), 2048, 4096)
    np.testing.assert_array_equal(shown, expected)
    assert shown[0, 0] == 255  # stored 0 is white in MONOCHROME1


def test_voi_lut_sequence_maps_the_values(server) -> None:
    ds = factories.with_voi_lut()
    store(server, ds)
    shown = pixels(get(server, url(server, ds)))
    lut = np.asarray(ds.VOILUTSequence[0].LUTData)
    index = np.clip(hounsfield(ds).astype(np.int64) + 200, 0, len(lut) - 1)
    np.testing.assert_array_equal(shown, lut[index])


def test_without_any_window_the_frame_range_is_stretched(server) -> None:
    ct = factories.ct_slice()
    del ct.WindowCenter
    del ct.WindowWidth
    store(server, ct)
    shown = pixels(get(server, url(server, ct)))
    hu = hounsfield(ct)
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    np.testing.assert_array_equal(shown, expected)


# -- colour --------------------------------------------------------------------------------

CORNERS = [((2, 2), 0), ((2, 29), 1), ((29, 2), 2), ((29, 29), 3)]


@pytest.mark.parametrize(
    ("photometric", "planar", "tolerance"),
    [("RGB", 0, 0), ("RGB", 1, 0), ("YBR_FULL", 0, 2)],
)
def test_native_colour_is_shown_as_rgb(server, photometric, planar, tolerance) -> None:
    ds = factories.rgb_secondary_capture(photometric=photometric, planar_configuration=planar)
    store(server, ds)
    shown = pixels(get(server, url(server, ds))).astype(int)
    for (row, column), block in CORNERS:
        assert np.abs(shown[row, column] - factories.RGB_BLOCKS[block]).max() <= tolerance


def test_ybr_full_422_jpeg_is_shown_as_rgb(server) -> None:
    ds = factories.ybr_jpeg()
    store(server, ds)
    shown = pixels(get(server, url(server, ds), headers={"Accept": "image/jpeg"}, quality="100"))
    for (row, column), block in CORNERS:
        assert np.abs(shown[row, column].astype(int) - factories.RGB_BLOCKS[block]).max() <= 8


def test_palette_colour_is_looked_up(server) -> None:
    ds = factories.palette_color()
    store(server, ds)
    shown = pixels(get(server, url(server, ds)))
    index = factories.palette_indices().astype(int)
    np.testing.assert_array_equal(shown[..., 0], index)
    np.testing.assert_array_equal(shown[..., 1], 255 - index)
    assert (shown[..., 2] == 128).all()


# -- frames, levels, documents -------------------------------------------------------------


def test_frame_level_renders_the_frame_asked_for(server) -> None:
    mf = factories.mr_multiframe(frames=10)
    store(server, mf)
    frame_url = url(server, mf).removesuffix("/rendered") + "/frames/{}/rendered"
    first = pixels(get(server, frame_url.format(1), window="1000,2000,linear"))
    third = pixels(get(server, frame_url.format(3), window="1000,2000,linear"))
    assert not np.array_equal(first, third)
    np.testing.assert_array_equal(third, linear(mf.pixel_array[2].astype(np.float64), 1000, 2000))
    np.testing.assert_array_equal(first, linear(mf.pixel_array[0].astype(np.float64), 1000, 2000))


def test_multiframe_as_gif_is_animated(server) -> None:
    mf = factories.mr_multiframe(frames=10)
    store(server, mf)
    response = get(
        server, url(server, mf), headers={"Accept": "image/gif"}, window="1000,2000,linear"
    )
    assert response.headers["content-type"] == "image/gif"
    animation = Image.open(io.BytesIO(response.content))
    assert animation.n_frames == 10
    animation.seek(2)
    shown = np.asarray(animation.convert("L"))
    np.testing.assert_array_equal(shown, linear(mf.pixel_array[2].astype(np.float64), 1000, 2000))


def test_study_and_series_render_the_middle_instance_of_the_first_series(server) -> None:
    instances = factories.study(n_series=2, per_series=3)
    store(server, *instances)
    middle = instances[1]  # series 1, instance number 2
    expected = get(server, url(server, middle), window="100,300,linear").content
    for level in ("study", "series"):
        response = get(server, url(server, middle, level), window="100,300,linear")
        assert response.status_code == 200, response.text
        assert response.content == expected, level


def test_encapsulated_pdf_renders_as_the_document(server) -> None:
    document = factories.minimal_pdf()  # dated by Pillow: made once, compared with itself
    pdf = factories.encapsulated_pdf(document)
    store(server, pdf)
    response = get(server, url(server, pdf), headers={"Accept": "application/pdf"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content == document
    refused = get(server, url(server, pdf), headers={"Accept": "image/jpeg"})
    assert refused.status_code == 406
    assert "application/pdf" in refused.json()["error"]


def test_video_renders_as_its_stream(server) -> None:
    video = factories.mpeg4_video()
    store(server, video)
    response = get(server, url(server, video), headers={"Accept": "*/*"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.content == b"\x00\x00\x00\x18ftypmp42FERRY-TEST-VIDEO"


# -- viewport, quality, annotation ---------------------------------------------------------


def test_viewport_fits_the_image_keeping_its_aspect(server) -> None:
    ct = factories.ct_slice(rows=64, columns=32)
    store(server, ct)
    assert pixels(get(server, url(server, ct), viewport="100,100")).shape == (100, 50)
    assert pixels(get(server, url(server, ct), viewport="16,64")).shape == (32, 16)


def test_viewport_source_region_crops_and_flips(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    full = linear(hounsfield(ct), 40, 400)
    quadrant = pixels(get(server, url(server, ct), viewport="32,32,0,0,32,32"))
    np.testing.assert_array_equal(quadrant, full[:32, :32])
    flipped = pixels(get(server, url(server, ct), viewport="32,32,32,0,-32,32"))
    np.testing.assert_array_equal(flipped, full[:32, :32][:, ::-1])


def test_quality_trades_size(server) -> None:
    ct = factories.ct_slice(rows=128, columns=128)
    store(server, ct)
    jpeg = {"Accept": "image/jpeg"}
    low = get(server, url(server, ct), headers=jpeg, quality="5")
    high = get(server, url(server, ct), headers=jpeg, quality="100")
    assert low.status_code == high.status_code == 200
    assert len(low.content) < len(high.content)


def test_annotation_is_ignored_with_a_warning(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = get(server, url(server, ct), annotation="patient,technique")
    assert response.status_code == 200
    assert "annotation" in response.headers["warning"]


def test_accept_query_parameter_chooses_the_type(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = get(server, url(server, ct), headers={"Accept": "image/jpeg"}, accept="image/png")
    assert response.headers["content-type"] == "image/png"


BAD_RENDERED = [
    ({"window": "40,0,linear"}, 400, "width"),
    ({"window": "40,-10,linear"}, 400, "width"),
    ({"window": "40,0.5,linear"}, 400, "width"),
    ({"window": "40,0,sigmoid"}, 400, "width"),
    ({"window": "forty,400,linear"}, 400, "not a number"),
    ({"window": "40,nan,linear"}, 400, "finite"),
    ({"window": "40,400"}, 400, "center,width,function"),
    ({"window": "40,400,linear,1"}, 400, "center,width,function"),
    ({"window": "40,400,cubic"}, 400, "cubic"),
    ({"viewport": "0,0"}, 400, "viewport"),
    ({"viewport": "100000,100000"}, 400, "4096"),
    ({"viewport": "-5,10"}, 400, "viewport"),
    ({"viewport": "64"}, 400, "vw,vh"),
    ({"viewport": "64,64,1,2"}, 400, "vw,vh"),
    ({"viewport": "64,64,0,0,0,10"}, 400, "sw"),
    ({"viewport": "64,64,60,0,20,20"}, 400, "outside"),
    ({"viewport": "wide,64"}, 400, "whole number"),
    ({"quality": "0"}, 400, "quality"),
    ({"quality": "101"}, 400, "quality"),
    ({"quality": "best"}, 400, "quality"),
    ({"accept": "application/zip"}, 406, "image/jpeg"),
    ({"accept": "image/jpeg;;;=="}, 400, "Accept"),
]


def test_bad_rendered_parameters_are_refused_with_a_reason(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    for params, status, words in BAD_RENDERED:
        response = get(server, url(server, ct), headers={"Accept": "image/png"}, **params)
        assert response.status_code == status, (params, response.text)
        assert words in response.json()["error"], (params, response.json())
    response = get(server, url(server, ct), headers={"Accept": "text/html"})
    assert response.status_code == 406


@pytest.mark.parametrize(
    ("frames", "status"), [("0", 400), ("-1", 400), ("11", 404), ("x", 400), ("1,2", 400)]
)
def test_bad_frame_numbers_are_refused(server, frames, status) -> None:
    mf = factories.mr_multiframe(frames=10)
    store(server, mf)
    address = url(server, mf).removesuffix("rendered") + f"frames/{frames}/rendered"
    response = get(server, address)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_unknown_instance_and_bad_uid(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    unknown = replace(factories.StudySpec(), study_uid=ct.StudyInstanceUID)
    missing = factories.ct_slice(spec=unknown)
    assert get(server, url(server, missing)).status_code == 404
    bad = url(server, ct).replace(ct.SOPInstanceUID, "not-a-uid")
    assert get(server, bad).status_code == 400


# -- thumbnails ----------------------------------------------------------------------------


def thumbnail_files(server) -> list[Path]:
    folder = server.settings.data_dir / "cache" / "thumbnails"
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_series_thumbnail_as_ohif_asks_is_cached(own_server) -> None:
    server = own_server  # the cache folder holds only this test's pictures
    instances = factories.study(n_series=1, per_series=3)
    store(server, *instances)
    address = url(server, instances[0], "series", "thumbnail")
    first = get(server, address, headers={"Accept": "image/jpeg"}, viewport="256,256")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(first.content)).size == (256, 256)
    assert "max-age" in first.headers["cache-control"]
    (cached,) = thumbnail_files(server)
    assert cached.read_bytes() == first.content
    second = get(server, address, headers={"Accept": "image/jpeg"}, viewport="256,256")
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    # Served from the file, not rendered again: what is in the file is what comes back.
    marker = first.content + b"cached"
    cached.write_bytes(marker)
    assert (
        get(server, address, headers={"Accept": "image/jpeg"}, viewport="256,256").content == marker
    )
    revalidated = httpx.get(
        address,
        params={"viewport": "256,256"},
        headers={"Accept": "image/jpeg", "If-None-Match": first.headers["etag"], **server.headers},
    )
    assert revalidated.status_code == 304


def test_thumbnail_default_size_and_levels(own_server) -> None:
    server = own_server  # the cache folder holds only this test's pictures
    mf = factories.mr_multiframe(frames=4, rows=32, columns=64)
    store(server, mf)
    for level in ("study", "series", "instance"):
        shown = pixels(get(server, url(server, mf, level, "thumbnail")))
        assert shown.shape == (64, 128), level
    frame = url(server, mf).removesuffix("rendered") + "frames/2/thumbnail"
    assert pixels(get(server, frame, viewport="32,32")).shape == (16, 32)
    assert len(thumbnail_files(server)) == 2  # the three levels share one entry


def test_thumbnail_ignores_rendering_parameters_with_a_warning(server) -> None:
    ct = factories.ct_slice()
    store(server, ct)
    response = get(server, url(server, ct, resource="thumbnail"), window="40,400,linear")
    assert response.status_code == 200
    assert "window" in response.headers["warning"]


def test_thumbnail_of_a_document_is_not_acceptable(own_server) -> None:
    server = own_server  # the cache folder holds only this test's pictures
    pdf = factories.encapsulated_pdf()
    store(server, pdf)
    response = get(server, url(server, pdf, resource="thumbnail"), headers={"Accept": "*/*"})
    assert response.status_code == 406
    assert response.json()["error"]
    assert thumbnail_files(server) == []


def test_thumbnail_cache_evicts_the_least_recently_used(tmp_path) -> None:
    cache = ThumbnailCache(tmp_path, max_bytes=3000)
    for number in range(3):
        cache.write(f"blob-{number}", f"{number:02x}" * 32, Rendered(b"x" * 1000, "image/png"))
        path = cache.path(f"blob-{number}", f"{number:02x}" * 32, "image/png")
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
    assert cache.read("blob-0", "00" * 32) is not None  # used now: the newest
    cache.write("blob-f", "ff" * 32, Rendered(b"y" * 1000, "image/png"))
    assert cache.read("blob-1", "01" * 32) is None  # the least recently used went
    assert cache.read("blob-0", "00" * 32) is not None
    assert cache.read("blob-f", "ff" * 32) == Rendered(b"y" * 1000, "image/png")


def test_a_deleted_studys_thumbnails_leave_the_cache(own_server) -> None:
    server = own_server  # the cache folder holds only this test's pictures
    kept, gone = (
        factories.study(n_series=1, per_series=2),
        factories.study(n_series=1, per_series=2),
    )
    store(server, *kept, *gone)
    assert get(server, url(server, kept[0], "series", "thumbnail")).status_code == 200
    [kept_file] = thumbnail_files(server)
    assert get(server, url(server, gone[0], "series", "thumbnail")).status_code == 200
    assert len(thumbnail_files(server)) == 2
    server.archive.delete(gone[0].StudyInstanceUID)
    assert thumbnail_files(server) == [kept_file]  # no picture of the deleted study's patient
    assert get(server, url(server, gone[0], "series", "thumbnail")).status_code == 404
    assert get(server, url(server, kept[0], "series", "thumbnail")).status_code == 200


def test_a_thumbnail_with_a_warning_says_it_every_time(own_server) -> None:
    """A picture drawn with a caveat (here a NumberOfFrames read as 1) is not served from the
    cache without it."""
    server = own_server  # the cache folder holds only this test's pictures
    ct = factories.ct_slice()
    ct.NumberOfFrames = 0
    store(server, ct)
    address = url(server, ct, resource="thumbnail")
    first, second = get(server, address), get(server, address)
    assert first.status_code == second.status_code == 200
    assert "NumberOfFrames 0" in first.headers["warning"]
    assert second.headers.get("warning") == first.headers["warning"]
    assert second.content == first.content
    assert thumbnail_files(server) == []  # kept only when there is nothing to say with it
