"""WADO-RS (PS3.18 10.4): series retrieve throughput read with curl, and metadata latency."""

from __future__ import annotations

import io
import statistics
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
from pydicom import dcmread

from _http import UnexpectedAnswer, first_value, parse_media_type, read_json_array, timed_get
from _instances import SeriesSpec, StudySpec
from _report import HIGHER, Figure, latency_figures
from _servers import Server

# Any transfer syntax: both servers then send the instances as stored, with no transcoding.
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SOP_INSTANCE_UID = "00080018"
CURL_TIMEOUT_S = 600


def measure_series_retrieve(server: Server, study: StudySpec, repeat: int) -> list[Figure]:
    """Median MB/s of retrieving one series, read by curl into /dev/null.

    httpx would measure itself (FIELD-NOTES.md: a few hundred MB/s on loopback); curl reads
    several times faster. One untimed retrieve through httpx checks every part first.
    """
    series = study.series[0]
    url = f"{server.base_url}/studies/{study.study_uid}/series/{series.series_uid}"
    expected_bytes = verify_series_retrieve(server, url, series)
    runs = []
    for _ in range(repeat):
        status, size, seconds = curl_get(url, server.headers)
        if status != 200 or size != expected_bytes:
            raise UnexpectedAnswer(f"curl: HTTP {status}, {size} bytes, expected {expected_bytes}")
        runs.append({"bytes": size, "seconds": seconds, "mb_per_s": size / seconds / 1e6})
    rows = study.rows
    label = f"WADO-RS series retrieve, {len(series.sop_uids)} × {rows}×{rows} CT (curl)"
    median = statistics.median(run["mb_per_s"] for run in runs)
    raw = {"url_path": url.removeprefix(server.base_url), "accept": RETRIEVE_ACCEPT, "runs": runs}
    return [Figure("wado.series", "wado.series.throughput", label, "MB/s", HIGHER, median, raw)]


def measure_parallel_retrieve(
    server: Server, study: StudySpec, repeat: int, clients: int
) -> list[Figure]:
    """Median MB/s of `clients` curls retrieving one series each at once (the study's series in
    turn): all bytes read over the wall-clock time from the first start to the last exit."""
    urls = [
        f"{server.base_url}/studies/{study.study_uid}/series/{series.series_uid}"
        for series in study.series
    ]
    expected = {url: verify_series_retrieve(server, url, series)
                for url, series in zip(urls, study.series, strict=True)}  # fmt: skip
    chosen = [urls[number % len(urls)] for number in range(clients)]
    runs = []
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(repeat):
            started = time.perf_counter()
            answers = list(pool.map(lambda url: curl_get(url, server.headers), chosen))
            seconds = time.perf_counter() - started
            for url, (status, size, _) in zip(chosen, answers, strict=True):
                if status != 200 or size != expected[url]:
                    raise UnexpectedAnswer(
                        f"curl: HTTP {status}, {size} bytes, expected {expected[url]}"
                    )
            total = sum(size for _, size, _ in answers)
            runs.append({"bytes": total, "seconds": seconds, "mb_per_s": total / seconds / 1e6})
    rows, size = study.rows, len(study.series[0].sop_uids)
    label = f"WADO-RS series retrieve, {size} × {rows}×{rows} CT, {clients} clients (curl)"
    median = statistics.median(run["mb_per_s"] for run in runs)
    group = f"wado.series.c{clients}"
    raw = {"clients": clients, "accept": RETRIEVE_ACCEPT, "runs": runs}
    return [Figure(group, f"{group}.throughput", label, "MB/s", HIGHER, median, raw)]


def verify_series_retrieve(server: Server, url: str, series: SeriesSpec) -> int:
    """Check that the answer holds exactly the series' instances; return its size in bytes."""
    with server.client() as client:
        response = client.get(url, headers={"Accept": RETRIEVE_ACCEPT})
    if response.status_code != 200:
        raise UnexpectedAnswer(f"HTTP {response.status_code}: {response.text[:300]}")
    parts = split_multipart_related(response)
    uids = set()
    for headers, body in parts:
        if not headers.get("content-type", "").startswith("application/dicom"):
            raise UnexpectedAnswer(f"part with Content-Type {headers.get('content-type')!r}")
        uids.add(str(dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID))
    if uids != set(series.sop_uids) or len(parts) != len(series.sop_uids):
        raise UnexpectedAnswer(
            f"{len(parts)} parts, {len(uids & set(series.sop_uids))} of the "
            f"{len(series.sop_uids)} instances of the series"
        )
    return len(response.content)


def split_multipart_related(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """(lower-cased headers, body) of each part of a multipart/related answer (RFC 2387)."""
    content_type = response.headers.get("content-type", "")
    essence, params = parse_media_type(content_type)
    boundary = params.get("boundary", "")
    if essence != "multipart/related" or not boundary:
        raise UnexpectedAnswer(f"not multipart/related with a boundary: {content_type!r}")
    parts = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head.decode().splitlines())
        )
        parts.append((headers, body.removesuffix(b"\r\n")))
    return parts


def measure_metadata_latency(
    server: Server,
    group: str,
    label: str,
    path: str,
    sop_uids: Sequence[str],
    repeat: int,
    warmup: int,
) -> list[Figure]:
    """p50/p95 of a /metadata request whose answer must list exactly `sop_uids`."""
    expected = set(sop_uids)
    seconds = []
    with server.client() as client:
        for attempt in range(warmup + repeat):
            elapsed, response = timed_get(client, f"{server.base_url}/{path}")
            found = [first_value(item, SOP_INSTANCE_UID) for item in read_json_array(response)]
            if len(found) != len(expected) or set(found) != expected:
                raise UnexpectedAnswer(
                    f"{path}: {len(found)} instances, expected the {len(expected)} stored"
                )
            if attempt >= warmup:
                seconds.append(elapsed)
    return latency_figures(
        group,
        group,
        label,
        seconds,
        path=path,
        instances=len(expected),
        body_bytes=len(response.content),
    )


def curl_get(
    url: str, headers: dict[str, str], accept: str = RETRIEVE_ACCEPT
) -> tuple[int, int, float]:
    """HTTP status, bytes read and curl's own total time for one GET.

    Headers go in a config read from stdin (`-K -`), so a bearer token never shows in `ps`.
    """
    status, size, seconds = _curl(url, headers, accept, "%{size_download} %{time_total}")
    return int(status), int(size), float(seconds)


def curl_first_byte(
    url: str, headers: dict[str, str], accept: str = RETRIEVE_ACCEPT
) -> tuple[int, int, float, float]:
    """As `curl_get`, with the seconds to the first byte of the answer before the total."""
    write_out = "%{size_download} %{time_starttransfer} %{time_total}"
    status, size, first, seconds = _curl(url, headers, accept, write_out)
    return int(status), int(size), float(first), float(seconds)


def _curl(url: str, headers: dict[str, str], accept: str, write_out: str) -> list[str]:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", f"%{{http_code}} {write_out}"]
    config = "".join(
        f'header = "{_quoted(f"{name}: {value}")}"\n'
        for name, value in {"Accept": accept, **headers}.items()
    )
    result = subprocess.run(
        [*argv, "-K", "-", url],
        input=config,
        capture_output=True,
        text=True,
        check=True,
        timeout=CURL_TIMEOUT_S,
    )
    return result.stdout.split()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
