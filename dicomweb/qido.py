"""QIDO-RS: search for studies, series and instances (PS3.18 10.6)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from pydicom.datadict import dictionary_VR
from starlette.requests import Request
from starlette.responses import Response

from archive.dicomjson import tag_of
from archive.levels import Level
from archive.search import (
    MATCHABLE,
    REQUEST_ATTRIBUTES_SEQUENCE,
    SEQUENCE_MATCHABLE,
    Filter,
    SearchQuery,
    SearchResult,
    StudyScope,
    encode_json_array,
    search,
)
from dicomweb.config import DicomwebConfig
from dicomweb.media import InvalidMediaType, accept_header, parse_accept
from dicomweb.urls import path_uid, public_base
from dicomweb.warning import warning_header
from foundation import metrics
from foundation.errors import InvalidQuery, NotAcceptable

_JSON_TYPES = {"application/dicom+json", "application/json", "*/*", "application/*"}
_MAX_OFFSET = 2**31


@functools.lru_cache(maxsize=1024)  # a handful of keys, asked on every search
def _attribute(key: str) -> tuple[int, bool] | None:
    """The tag a key names (`PatientName`, `00100010`, `Sequence.Keyword`) and if we match it."""
    try:
        tags = [tag_of(part) for part in key.split(".")]
    except ValueError:
        return None
    if len(tags) == 1:
        return tags[0], tags[0] in MATCHABLE and tags[0] not in SEQUENCE_MATCHABLE
    in_request = tags[0] == REQUEST_ATTRIBUTES_SEQUENCE and len(tags) == 2
    return tags[0], in_request and tags[1] in SEQUENCE_MATCHABLE


def _number(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be a non-negative integer, not {text[:40]!r}") from None
    if value < 0:
        raise InvalidQuery(f"{name} must be a non-negative integer, not {value}")
    return value


def _include_tags(values: list[str]) -> tuple[frozenset[int], bool]:
    tags: set[int] = set()
    include_all = False
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                include_all = True
                continue
            try:
                tags.add(tag_of(item))
            except ValueError:
                raise InvalidQuery(f"includefield: unknown attribute {item[:80]!r}") from None
    return frozenset(tags), include_all


def parse_search(
    request: Request, level: Level, config: DicomwebConfig
) -> tuple[SearchQuery, list[str]]:
    """The query string as a SearchQuery, and the warnings for what was not honoured."""
    warnings: list[str] = []
    filters: list[Filter] = []
    includes: list[str] = []
    returned: set[int] = set()
    limit = config.qido_max_limit
    offset = 0
    fuzzy = False
    for name, value in request.query_params.multi_items():
        lowered = name.lower()
        if lowered == "includefield":
            includes.append(value)
        elif lowered == "limit":
            limit = _number("limit", value)
            if limit > config.qido_max_limit:
                warnings.append(f"limit {limit} reduced to the maximum {config.qido_max_limit}")
                limit = config.qido_max_limit
        elif lowered == "offset":
            offset = _number("offset", value)
            if offset > _MAX_OFFSET:
                raise InvalidQuery(f"offset must be at most {_MAX_OFFSET}")
        elif lowered == "fuzzymatching":
            if value.lower() not in {"true", "false"}:
                raise InvalidQuery("fuzzymatching must be true or false")
            fuzzy = value.lower() == "true"
        else:
            item = _filter(name, value, warnings, returned)
            if item is not None:
                filters.append(item)
    include_tags, include_all = _include_tags(includes)
    query = SearchQuery(
        level=level,
        study_uid=path_uid(request, "study") if "study" in request.path_params else None,
        series_uid=path_uid(request, "series") if "series" in request.path_params else None,
        filters=tuple(filters),
        include_tags=include_tags | returned,
        include_all=include_all,
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
        # Set by the guard; a missing scope sees nothing rather than everything.
        # Set by the guard; a missing scope sees nothing rather than everything.
        scope=getattr(request.state, "scope", StudyScope(frozenset(), datetime.now(UTC))),
    )
    return query, warnings


def _filter(name: str, value: str, warnings: list[str], returned: set[int]) -> Filter | None:
    """A filter for a key we match on; other attributes are returned, not matched (8.3.4.1)."""
    attribute = _attribute(name)
    if attribute is None:
        warnings.append(f"unknown query parameter {name[:64]!r} ignored")
        return None
    tag, matchable = attribute
    if not matchable:
        warnings.append(f"matching on {name[:64]} is not supported; the attribute is returned")
        returned.add(tag)
        return None
    if "\x00" in value or len(value) > 4096:
        raise InvalidQuery(f"{name[:64]}: value is not acceptable")
    _check_vr(tag, name, value)
    if tag == REQUEST_ATTRIBUTES_SEQUENCE:
        tag = tag_of(name.split(".")[1])
    return Filter(tag, value, name)


def _check_vr(tag: int, name: str, value: str) -> None:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return
    if vr in {"DA", "TM", "DT"} and any(c in value for c in "*?") and value != "*":
        raise InvalidQuery(f"{name}: wildcards are not allowed for {vr} values")


def _check_accept(request: Request) -> None:
    if not _accepts_json(accept_header(request.headers.getlist("accept"))):
        raise NotAcceptable("search results are available as application/dicom+json only")


@functools.lru_cache(maxsize=256)  # clients send the same few Accept headers on every search
def _accepts_json(header: str | None) -> bool:
    try:
        ranges = parse_accept(header)
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None
    return any(r.essence in _JSON_TYPES for r in ranges)


def _search(request: Request, level: Level) -> tuple[SearchResult, list[str]]:
    """Runs in a worker thread, right after the guard (`guarded_blocking`)."""
    config: DicomwebConfig = request.app.state.dicomweb
    _check_accept(request)
    query, warnings = parse_search(request, level, config)
    base = public_base(request, config)
    result = search(request.app.state.archive.engine, query, base)
    metrics.QIDO_RESULTS.labels(level.value).observe(len(result.documents))
    if result.truncated:
        warnings.append(
            "The number of results exceeded the maximum supported by the server. "
            "Additional results can be requested."
        )
    return result, warnings


def answer_search(_request: Request, found: tuple[SearchResult, list[str]]) -> Response:
    result, warnings = found
    headers = {"Warning": warning_header(warnings)} if warnings else {}
    body = encode_json_array(result.documents)
    return Response(body, media_type="application/dicom+json", headers=headers)


def search_for_studies(request: Request) -> tuple[SearchResult, list[str]]:
    return _search(request, Level.STUDY)


def search_for_series(request: Request) -> tuple[SearchResult, list[str]]:
    return _search(request, Level.SERIES)


def search_for_instances(request: Request) -> tuple[SearchResult, list[str]]:
    return _search(request, Level.INSTANCE)
