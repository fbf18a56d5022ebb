"""Timed DICOMweb GET requests, and the checks that keep an error from passing as a result."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import orjson

DICOM_JSON = "application/dicom+json"
# One `; name=value` parameter of a media type, the value a token or a quoted string (RFC 9110 5.6).
_PARAMETER = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class UnexpectedAnswer(RuntimeError):
    """A server answered, but not with what was asked for."""


def timed_get(
    client: httpx.Client, url: str, accept: str = DICOM_JSON
) -> tuple[float, httpx.Response]:
    """Seconds from sending the request to having read the whole body, and the response."""
    started = time.perf_counter()
    response = client.get(url, headers={"Accept": accept})
    return time.perf_counter() - started, response


def read_json_array(response: httpx.Response) -> list[dict[str, Any]]:
    """The DICOM JSON array of a 200 answer (PS3.18 F.2)."""
    if response.status_code != 200:
        raise UnexpectedAnswer(f"HTTP {response.status_code}: {response.text[:300]}")
    results = orjson.loads(response.content)
    if not isinstance(results, list):
        raise UnexpectedAnswer(f"expected a JSON array, got {type(results).__name__}")
    return results


def first_value(dataset: dict[str, Any], tag: str) -> Any:
    """The first value of `tag` in a DICOM JSON object, or None."""
    values = dataset.get(tag, {}).get("Value") or [None]
    return values[0]


def parse_media_type(header: str) -> tuple[str, dict[str, str]]:
    """The lower-cased type/subtype and the parameters (names lower-cased, quotes removed).

    A quoted value may hold `;`: Orthanc writes `type="application/octet-stream;
    transfer-syntax=..."` in a multipart Content-Type.
    """
    essence, _, rest = header.partition(";")
    params = {
        name.lower(): re.sub(r"\\(.)", r"\1", value[1:-1])
        if value.startswith('"')
        else value.strip()
        for name, value in _PARAMETER.findall(";" + rest)
    }
    return essence.strip().lower(), params
