"""WADO-RS frames, rendered and thumbnail (PS3.18 10.4.1.1.3, 10.4.1.1.6, 10.4.3), all checked."""

from __future__ import annotations

import functools
import io
import statistics
from collections.abc import Callable, Sequence

import httpx
import numpy as np
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from _http import UnexpectedAnswer, parse_media_type, timed_get
from _images import (
    LUNG_AT,
    SLICE_ROWS,
    SPINE_AT,
    TISSUE_AT,
    ViewingStudy,
    codestream,
    compressed_instance,
    multiframe_pixels,
    slice_pixels,
)
from _report import HIGHER, LOWER, Figure, Report, latency_figures
from _retrieve import curl_get, split_multipart_related
from _servers import Server

# OHIF's own Accept: frames as stored, whatever their transfer syntax. Orthanc 1.10 / dicom-web
# 1.7 answers 400 to `type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.90`
# ("Cannot specify a transfer syntax for default Little Endian uncompressed pixel data"), and
# passes a JPEG 2000 frame through for `transfer-syntax=*`, labelling the part `image/jp2`.
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTET_STREAM = "application/octet-stream"
JPEG = "image/jpeg"
THUMBNAIL_VIEWPORT = 128
SERIES_THROUGHPUT_KEY = "wado.series.throughput"
MULTI_THROUGHPUT_KEY = "frames.multi.throughput"
MIN_CONTRAST = 100  # grey levels between the spine and a lung in a soft-tissue window

Measure = Callable[[Server], list[Figure]]


def viewing_measures(
    viewing: ViewingStudy, seed: int, repeat: int, warmup: int, curl_repeat: int
) -> dict[str, tuple[str, Measure]]:
    """Each measure on the stored viewing study, by group: (label, measure of one server)."""
    study = f"studies/{viewing.study.study_uid}"
    native, j2k, multi = (
        f"{study}/series/{series.series_uid}/instances/{series.sop_uids[0]}"
        for series in (viewing.slices, viewing.compressed, viewing.multiframe)
    )
    stream = codestream(compressed_instance(viewing, seed))
    size = 2 * viewing.frame_rows**2
    pixels = multiframe_pixels(viewing.frames, viewing.frame_rows, seed)
    frames = [pixels[start : start + size] for start in range(0, len(pixels), size)]
    every = ",".join(str(number) for number in range(1, viewing.frames + 1))
    series = f"{study}/series/{viewing.slices.series_uid}"
    middle = (viewing.frames + 1) // 2
    rows, side = viewing.frame_rows, THUMBNAIL_VIEWPORT
    labels = {
        "frames.native": f"WADO-RS frame, {SLICE_ROWS}×{SLICE_ROWS} 16-bit native",
        "frames.j2k": f"WADO-RS frame, {SLICE_ROWS}×{SLICE_ROWS} JPEG 2000 passthrough",
        "frames.multi": f"WADO-RS all {viewing.frames} frames, {rows}×{rows} 16-bit (curl)",
        "frames.nth": f"WADO-RS frame {middle} of the {viewing.frames}-frame instance",
        "rendered": f"WADO-RS rendered JPEG, {SLICE_ROWS}×{SLICE_ROWS} CT slice",
        "thumbnail": f"WADO-RS series thumbnail {side}×{side} JPEG, warm",
    }
    checks = {
        "frames.native": FrameCheck(
            [slice_pixels(seed, 0)], {OCTET_STREAM}, ExplicitVRLittleEndian
        ),
        "frames.j2k": FrameCheck([stream], {OCTET_STREAM, "image/jp2"}, JPEG2000Lossless),
    }
    measures: dict[str, Measure] = {
        group: functools.partial(
            measure_frame_latency, path=f"{path}/frames/1", check=checks[group], group=group,
            label=labels[group], repeat=repeat, warmup=warmup,
        )
        for group, path in (("frames.native", native), ("frames.j2k", j2k))
    }  # fmt: skip
    measures["frames.multi"] = functools.partial(
        measure_frames_throughput, path=f"{multi}/frames/{every}",
        check=FrameCheck(frames, {OCTET_STREAM}, ExplicitVRLittleEndian),
        label=labels["frames.multi"], repeat=curl_repeat,
    )  # fmt: skip
    measures["frames.nth"] = functools.partial(
        measure_frame_latency, path=f"{multi}/frames/{middle}",
        check=FrameCheck([frames[middle - 1]], {OCTET_STREAM}, ExplicitVRLittleEndian),
        group="frames.nth", label=labels["frames.nth"], repeat=repeat, warmup=warmup,
    )  # fmt: skip
    measures["rendered"] = functools.partial(
        measure_picture_latency, path=f"{native}/rendered", group="rendered",
        label=labels["rendered"], size=SLICE_ROWS, repeat=repeat, warmup=warmup,
    )  # fmt: skip
    measures["thumbnail"] = functools.partial(
        measure_thumbnail_latency, series=series, label=labels["thumbnail"], repeat=repeat,
        warmup=max(1, warmup),
    )  # fmt: skip
    return {group: (labels[group], measure) for group, measure in measures.items()}


class FrameCheck:
    """What a frames answer must be: one part per frame asked for, each the stored bytes in one
    of `media_types`, labelled with `transfer_syntax`."""

    def __init__(self, frames: Sequence[bytes], media_types: set[str], transfer_syntax: str):
        self.frames = frames
        self.media_types = media_types
        self.transfer_syntax = transfer_syntax

    def __call__(self, response: httpx.Response) -> str:
        """Raise UnexpectedAnswer unless the answer is right; the first part's Content-Type."""
        if response.status_code != 200:
            raise UnexpectedAnswer(f"HTTP {response.status_code}: {response.text[:300]}")
        parts = split_multipart_related(response)
        if len(parts) != len(self.frames):
            raise UnexpectedAnswer(f"{len(parts)} parts for {len(self.frames)} frames")
        for number, ((headers, body), stored) in enumerate(zip(parts, self.frames, strict=True)):
            content_type = headers.get("content-type", "")
            media, params = parse_media_type(content_type)
            if (
                media not in self.media_types
                or params.get("transfer-syntax") != self.transfer_syntax
            ):
                raise UnexpectedAnswer(
                    f"frame {number + 1} as {content_type!r}, expected one of "
                    f"{sorted(self.media_types)} with transfer-syntax={self.transfer_syntax}"
                )
            if not _same_frame(body, stored):
                raise UnexpectedAnswer(
                    f"frame {number + 1}: {len(body)} bytes that are not the {len(stored)} stored"
                )
        return parts[0][0].get("content-type", "")


def _same_frame(body: bytes, stored: bytes) -> bool:
    """Equal, but for the byte that pads an odd-length fragment to an even length (PS3.5 A.4)."""
    return body == stored or body == stored + b"\0" or body + b"\0" == stored


def measure_frame_latency(
    server: Server,
    path: str,
    check: FrameCheck,
    group: str,
    label: str,
    repeat: int,
    warmup: int,
) -> list[Figure]:
    """p50/p95 of one frame, retrieved with `FRAME_ACCEPT`; every answer checked byte for byte."""
    url, seconds = f"{server.base_url}/{path}", []
    with server.client() as client:
        for attempt in range(warmup + repeat):
            elapsed, response = timed_get(client, url, FRAME_ACCEPT)
            part_type = check(response)
            if attempt >= warmup:
                seconds.append(elapsed)
    return latency_figures(
        group, group, label, seconds,
        url_path=f"/{path}", accept=FRAME_ACCEPT,
        content_type=response.headers.get("content-type"), part_content_type=part_type,
        frame_bytes=len(check.frames[0]), body_bytes=len(response.content),
    )  # fmt: skip


def measure_frames_throughput(
    server: Server, path: str, check: FrameCheck, label: str, repeat: int
) -> list[Figure]:
    """Median MB/s of every frame in one request, read by curl into /dev/null as the series
    retrieve is; one untimed retrieve through httpx checks every frame first."""
    url = f"{server.base_url}/{path}"
    with server.client(timeout=600.0) as client:
        response = client.get(url, headers={"Accept": FRAME_ACCEPT})
    part_type = check(response)
    expected_bytes = len(response.content)
    del response
    runs = []
    for _ in range(repeat):
        status, size, seconds = curl_get(url, server.headers, FRAME_ACCEPT)
        if status != 200 or size != expected_bytes:
            raise UnexpectedAnswer(f"curl: HTTP {status}, {size} bytes, expected {expected_bytes}")
        runs.append({"bytes": size, "seconds": seconds, "mb_per_s": size / seconds / 1e6})
    median = statistics.median(run["mb_per_s"] for run in runs)
    raw = {
        "url_path_chars": len(path) + 1,
        "accept": FRAME_ACCEPT,
        "frames": len(check.frames),
        "part_content_type": part_type,
        "runs": runs,
    }
    return [Figure("frames.multi", MULTI_THROUGHPUT_KEY, label, "MB/s", HIGHER, median, raw)]


def fraction_of_series(report: Report, server: str) -> Figure:
    """All frames' MB/s as a percentage of the series retrieve's in this run (n/a without it)."""
    frames = report.rows[MULTI_THROUGHPUT_KEY].values.get(server)
    series_row = report.rows.get(SERIES_THROUGHPUT_KEY)
    series = series_row.values.get(server) if series_row else None
    value = 100.0 * frames / series if frames and series else None
    raw = {"frames_mb_per_s": frames, "series_mb_per_s": series}
    label = "  … as % of WADO-RS series retrieve"
    return Figure("frames.multi", "frames.multi.fraction", label, "%", HIGHER, value, raw)


def measure_picture_latency(
    server: Server, path: str, group: str, label: str, size: int, repeat: int, warmup: int
) -> list[Figure]:
    """p50/p95 of a rendered JPEG whose every answer must show the phantom at `size` pixels."""
    url, seconds = f"{server.base_url}/{path}", []
    with server.client() as client:
        for attempt in range(warmup + repeat):
            elapsed, response = timed_get(client, url, JPEG)
            check_picture(response, size, exact=group == "rendered")
            if attempt >= warmup:
                seconds.append(elapsed)
    return latency_figures(
        group, group, label, seconds,
        url_path=f"/{path}", accept=JPEG, body_bytes=len(response.content),
    )  # fmt: skip


def measure_thumbnail_latency(
    server: Server, series: str, label: str, repeat: int, warmup: int
) -> list[Figure]:
    """Like a rendered image, after `warmup` requests (at least one) that fill the server's cache.

    A 404 while the same series renders is a server without /thumbnail: n/a, not an error.
    """
    viewport = f"viewport={THUMBNAIL_VIEWPORT},{THUMBNAIL_VIEWPORT}"
    url = f"{server.base_url}/{series}"
    with server.client() as client:
        response = client.get(f"{url}/thumbnail?{viewport}", headers={"Accept": JPEG})
        if response.status_code == 404:
            rendered = client.get(f"{url}/rendered?{viewport}", headers={"Accept": JPEG})
            check_picture(rendered, THUMBNAIL_VIEWPORT, exact=False)
            reason = f"/thumbnail answers 404 where /rendered answers: {response.text[:200]}"
            return [
                Figure("thumbnail", f"thumbnail.p{q}", f"{label} p{q}", "ms", LOWER, None,
                       {"not_implemented": reason, "url_path": f"/{series}/thumbnail?{viewport}"})
                for q in (50, 95)
            ]  # fmt: skip
    check_picture(response, THUMBNAIL_VIEWPORT, exact=False)
    return measure_picture_latency(
        server, f"{series}/thumbnail?{viewport}", "thumbnail", label,
        THUMBNAIL_VIEWPORT, repeat, warmup - 1,
    )  # fmt: skip


def check_picture(response: httpx.Response, size: int, exact: bool) -> None:
    """A JPEG of `size` pixels (at most, unless `exact`) where lung < soft tissue < spine."""
    if response.status_code != 200:
        raise UnexpectedAnswer(f"HTTP {response.status_code}: {response.text[:300]}")
    media, _ = parse_media_type(response.headers.get("content-type", ""))
    if media != JPEG or not response.content.startswith(b"\xff\xd8"):
        raise UnexpectedAnswer(f"{media!r} of {len(response.content)} bytes, not a JPEG")
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=float)
    height, width = picture.shape
    fits = (width, height) == (size, size) if exact else 0 < max(width, height) <= size
    if not fits:
        raise UnexpectedAnswer(f"a {width}×{height} picture, expected {size}×{size}")
    lung, tissue, spine = (_grey(picture, *at) for at in (LUNG_AT, TISSUE_AT, SPINE_AT))
    if not lung < tissue < spine or spine - lung < MIN_CONTRAST:
        raise UnexpectedAnswer(
            f"grey levels lung {lung:.0f}, soft tissue {tissue:.0f}, spine {spine:.0f}: "
            "not the phantom in a soft-tissue window"
        )


def _grey(picture: np.ndarray, x: float, y: float) -> float:
    """Mean grey level of a small square around the point (x, y), given as fractions."""
    height, width = picture.shape
    column, row, half = int(x * width), int(y * height), max(1, width // 64)
    return float(picture[row - half : row + half + 1, column - half : column + half + 1].mean())
