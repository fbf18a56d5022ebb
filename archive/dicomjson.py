"""DICOM JSON (PS3.18 F.2) of a stored instance, computed once at ingest.

Bulk data (pixel data, encapsulated documents, large binaries) becomes a BulkDataURI. The
stored document carries the placeholder `{base}` in front of each BulkDataURI path, replaced
by the public base URL when served, so a change of host name never needs a re-index.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

log = logging.getLogger(__name__)

BASE_PLACEHOLDER = "{base}"
BULK_DATA_THRESHOLD = 1024  # bytes of base64; larger binaries go out as BulkDataURI
PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_BULK_MARKER = b'"BulkDataURI":"' + BASE_PLACEHOLDER.encode()


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def _tag_key(tag: int) -> str:
    return f"{tag:08X}"


def _element_json(element: DataElement, bulk_prefix: str, path: str) -> dict[str, Any]:
    key = f"{path}{_tag_key(element.tag)}"

    def bulk_uri(_element: DataElement) -> str:
        return f"{bulk_prefix}/bulk/{key}"

    try:
        return element.to_json_dict(bulk_uri, BULK_DATA_THRESHOLD)
    except Exception as error:  # pydicom raises many kinds on malformed values
        # Read leniently: a malformed value (say DS "1,5") keeps its VR but loses its value.
        log.warning("attribute %s not representable in DICOM JSON: %s", key, error)
        return {"vr": element.VR}


def dataset_json(dataset: Dataset, bulk_prefix: str, path: str = "") -> dict[str, Any]:
    """Our own walk (not pydicom's) so that nested bulk data gets a path-qualified URI."""
    result: dict[str, Any] = {}
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
        except Exception as error:  # pydicom converts lazily; hostile values fail here
            log.warning("attribute %08X unreadable, left out of DICOM JSON: %s", tag, error)
            continue
        key = _tag_key(element.tag)
        if element.VR == "SQ":
            items = [
                dataset_json(item, bulk_prefix, f"{path}{key}/{index}/")
                for index, item in enumerate(element.value)
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            result[key] = _element_json(element, bulk_prefix, path)
    return result


def instance_json(
    dataset: Dataset, study_uid: str, series_uid: str, sop_uid: str, pixel_vr: str | None
) -> dict[str, Any]:
    """The instance's metadata; `pixel_vr` is set when pixel data followed the parsed part."""
    prefix = BASE_PLACEHOLDER + instance_path(study_uid, series_uid, sop_uid)
    return finish_instance_json(dataset_json(dataset, prefix), prefix, pixel_vr)


def finish_instance_json(
    result: dict[str, Any], prefix: str, pixel_vr: str | None
) -> dict[str, Any]:
    """The top-level attributes (keyed by tag) with the pixel data's BulkDataURI, in tag order."""
    if pixel_vr is not None:
        result[_tag_key(0x7FE00010)] = {"vr": pixel_vr, "BulkDataURI": f"{prefix}/bulk/7FE00010"}
    return dict(sorted(result.items()))


def encode(document: Any) -> bytes:
    return orjson.dumps(document)


def with_base(stored: bytes, base: str) -> bytes:
    """Turn the stored placeholders into absolute URIs for this request's public base URL."""
    return stored.replace(_BULK_MARKER, b'"BulkDataURI":"' + base.encode())


def tag_of(keyword_or_tag: str) -> int:
    """`PatientName` or `00100010` to an integer tag; ValueError for anything else."""
    text = keyword_or_tag.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    try:
        return int(Tag(text))
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"unknown attribute {keyword_or_tag!r}") from error
