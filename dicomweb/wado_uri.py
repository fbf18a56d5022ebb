"""WADO-URI: one object by query string, as DICOM or rendered (PS3.18 9).

`GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`. Without `contentType`
an image comes as image/jpeg, an encapsulated document as its own type, a video as its
stream, and anything else as application/dicom. The rendering is that of /rendered.
The DICOM object is sent in Explicit VR Little Endian unless `transferSyntax` names another
syntax or `*` (as stored): PS3.18 9.4.2.4, by the rule WADO-RS follows (`dicomweb.transfer_syntax`).
`anonymize=yes` (with contentType=application/dicom only) sends it de-identified by the basic
profile of PS3.15 Annex E (`archive.pseudonymise`), under a secret of that request alone.
"""

from __future__ import annotations

import functools
import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import IO

import anyio
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from archive.blobstore import CHUNK_SIZE
from archive.pseudonymise import BASIC, pseudonymise_file
from archive.store import Archive, StoredInstance
from dicomweb.guard import authorize_study
from dicomweb.media import InvalidMediaType, parse_accept
from dicomweb.rendered import parse_integer, parse_number, parse_quality, single
from dicomweb.rendering import (
    DEFAULT_QUALITY,
    NoRenditionAccepted,
    Region,
    Rendered,
    RenderOptions,
    Viewport,
    Window,
    render_stored,
)
from dicomweb.streaming import PrimedStreamingResponse
from dicomweb.transfer_syntax import (
    ANY_TRANSFER_SYNTAX,
    DEFAULT_SYNTAX,
    choose_transfer_syntax,
    read_stored_pixels,
    spool_transcoded,
)
from dicomweb.warning import warning_header
from foundation.errors import InvalidQuery, NotAcceptable, StoredDataUnreadable
from policy.roles import Action

DICOM = "application/dicom"
_PARAMETERS = {
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "charset",
    "anonymize",
    "annotation",
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "frameNumber",
    "imageQuality",
    "presentationUID",
    "presentationSeriesUID",
    "transferSyntax",
}


def _uid(params: QueryParams, name: str) -> str | None:
    value = single(params, name)
    if value is not None and not UID(value).is_valid:
        raise InvalidQuery(f"{name} {value[:80]!r} is not a valid UID")
    return value


def _required_uid(params: QueryParams, name: str) -> str:
    value = _uid(params, name)
    if value is None:
        raise InvalidQuery(f"{name} is required")
    return value


def _transfer_syntax(params: QueryParams) -> str | None:
    """The client's choice: None for "as stored" (`*`, Ferry's addition as in WADO-RS's
    media type parameter), DEFAULT_SYNTAX when absent, else a valid UID (PS3.18 9.4.2.4)."""
    value = single(params, "transferSyntax")
    if value is None:
        return DEFAULT_SYNTAX
    if value.strip() == ANY_TRANSFER_SYNTAX:
        return None
    if not UID(value).is_valid:
        raise InvalidQuery(f"transferSyntax {value[:80]!r} is not a valid UID")
    return value


def _content_types(params: QueryParams) -> list[str] | None:
    """`contentType` is a list of media types, most wanted first; None when not given."""
    text = single(params, "contentType")
    if text is None:
        return None
    try:
        ranges = parse_accept(text)
    except InvalidMediaType as error:
        raise InvalidQuery(f"contentType: {error}") from None
    if not text.strip() or not ranges:
        raise InvalidQuery("contentType names no media type")
    return [media.essence for media in ranges]


def _size(params: QueryParams, name: str) -> int | None:
    text = single(params, name)
    return None if text is None else parse_integer(name, text)


def _options(params: QueryParams) -> RenderOptions:
    rows, columns = _size(params, "rows"), _size(params, "columns")
    center, width = single(params, "windowCenter"), single(params, "windowWidth")
    if (center is None) != (width is None):
        raise InvalidQuery("windowCenter and windowWidth come together")
    region = single(params, "region")
    quality = single(params, "imageQuality")
    return RenderOptions(
        window=(
            Window(parse_number("windowCenter", center), parse_number("windowWidth", width))
            if center is not None and width is not None
            else None
        ),
        viewport=Viewport(columns, rows) if rows is not None or columns is not None else None,
        region=_region(region) if region is not None else None,
        quality=parse_quality(quality) if quality is not None else DEFAULT_QUALITY,
    )


def _region(text: str) -> Region:
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidQuery(f"region {text[:60]!r} must be x1,y1,x2,y2")
    return Region(*(parse_number("region", part) for part in parts))


def _frames(params: QueryParams) -> list[int] | None:
    number = _size(params, "frameNumber")
    if number is not None and number < 1:
        raise InvalidQuery(f"frameNumber {number} must be 1 or more")
    return None if number is None else [number]


def _warnings(params: QueryParams) -> list[str]:
    unknown = [name for name in params if name not in _PARAMETERS]
    messages = [f"{name} is not a WADO-URI parameter; ignored" for name in unknown]
    for name in ("annotation", "presentationUID", "presentationSeriesUID"):
        if name in params:
            messages.append(f"{name} is not applied; ignored")
    return messages


async def retrieve_wado_uri(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    params = request.query_params
    if single(params, "requestType") != "WADO":
        raise InvalidQuery("requestType=WADO is required")
    study, series, instance = (
        _required_uid(params, n) for n in ("studyUID", "seriesUID", "objectUID")
    )
    anonymize = single(params, "anonymize")
    wanted = _content_types(params)
    if anonymize is not None:
        if anonymize != "yes":
            raise InvalidQuery(f"anonymize {anonymize[:20]!r} must be yes")
        if wanted is None or wanted[0] != DICOM:
            raise InvalidQuery("anonymize=yes is for contentType=application/dicom")
    transfer_syntax = _transfer_syntax(params)
    options, frames = _options(params), _frames(params)
    (stored,) = await anyio.to_thread.run_sync(archive.find_instances, study, series, instance)
    headers = {"Cache-Control": "private, max-age=3600"}
    messages = _warnings(params)
    if messages:
        headers["Warning"] = warning_header(messages)
    if wanted is not None and wanted[0] == DICOM:
        return await _download(
            request, archive, stored, transfer_syntax, headers, anonymize=anonymize is not None
        )
    fallback = wanted is None or DICOM in wanted
    accepted = [t for t in wanted or ["*/*"] if t != DICOM]
    rendered = await anyio.to_thread.run_sync(
        _render_or_none, archive, stored, accepted, frames, options, fallback
    )
    if rendered is None:
        return await _download(request, archive, stored, transfer_syntax, headers)
    if messages or rendered.warnings:
        headers["Warning"] = warning_header(messages + list(rendered.warnings))
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)


def _render_or_none(
    archive: Archive,
    stored: StoredInstance,
    accepted: list[str],
    frames: list[int] | None,
    options: RenderOptions,
    fallback: bool,
) -> Rendered | None:
    """None: send the DICOM object instead, which the client listed or left to us."""
    try:
        return render_stored(archive.blobs, stored.blob_key, accepted, frames, options)
    except NoRenditionAccepted:
        if fallback:
            return None
        raise


async def _download(
    request: Request,
    archive: Archive,
    stored: StoredInstance,
    transfer_syntax: str | None,
    headers: dict[str, str],
    *,
    anonymize: bool = False,
) -> Response:
    """The Part 10 file is a download, however it came to be chosen: decided as one."""
    if request.state.action is Action.DOWNLOAD:  # the guard did
        return await _dicom_response(archive, stored, transfer_syntax, headers, anonymize)
    await anyio.to_thread.run_sync(
        functools.partial(
            authorize_study,
            request,
            Action.DOWNLOAD,
            stored.study_instance_uid,
            sop_instance_uid=stored.sop_instance_uid,
            negotiated=DICOM,
        )
    )
    return await _dicom_response(archive, stored, transfer_syntax, headers, anonymize)


async def _dicom_response(
    archive: Archive,
    stored: StoredInstance,
    choice: str | None,
    headers: dict[str, str],
    anonymize: bool = False,
) -> Response:
    """The Part 10 file in the transfer syntax chosen (`_transfer_syntax`): as stored when
    it is that syntax, else transcoded whole before the response starts, so that a refusal
    is still a status, not a cut. With `anonymize`, de-identified by the basic profile of
    PS3.15 Annex E under a secret of this request only (nothing links two answers)."""
    spool, left_default = await anyio.to_thread.run_sync(_prepare_object, archive, stored, choice)
    if anonymize:
        spool = await anyio.to_thread.run_sync(_anonymized, archive, stored, spool)
    if left_default is not None:
        warnings = [headers["Warning"]] if "Warning" in headers else []
        headers = {**headers, "Warning": ", ".join([*warnings, warning_header([left_default])])}
    if spool is None:
        chunks = archive.blobs.iter_chunks(stored.blob_key)
        size = stored.size
    else:
        size = spool.seek(0, os.SEEK_END)
        spool.seek(0)
        chunks = _iter_spool(spool)
    headers = {**headers, "Content-Length": str(size)}
    return PrimedStreamingResponse(chunks, media_type=DICOM, headers=headers)


def _prepare_object(
    archive: Archive, stored: StoredInstance, choice: str | None
) -> tuple[IO[bytes] | None, str | None]:
    """(the transcoded file, or None to send the stored one; why the default was left)."""
    read_pixels = functools.partial(read_stored_pixels, archive.blobs)
    try:
        target, left_default = choose_transfer_syntax(choice, stored, read_pixels)
    except NotAcceptable as refusal:
        raise NotAcceptable(f"transferSyntax {choice}: {refusal}") from None
    if target == stored.transfer_syntax_uid:
        return None, left_default
    try:
        return spool_transcoded(archive.blobs, stored, target), None  # 422 if it won't decode
    except (ValueError, RuntimeError, NotImplementedError) as error:
        raise NotAcceptable(f"transcoding to {target} failed: {error}") from None


def _anonymized(archive: Archive, stored: StoredInstance, spool: IO[bytes] | None) -> IO[bytes]:
    """The object (transcoded or as stored) de-identified into a spool of its own."""
    target = tempfile.TemporaryFile()  # noqa: SIM115 (handed to the response, which closes it)
    try:
        with spool or archive.blobs.open(stored.blob_key) as source:
            source.seek(0)
            pseudonymise_file(source, target, BASIC, secrets.token_bytes(32))
    except (InvalidDicomError, ValueError, KeyError, TypeError) as error:
        target.close()
        raise StoredDataUnreadable(f"cannot de-identify the object: {error}"[:300]) from None
    except BaseException:
        target.close()
        raise
    return target


def _iter_spool(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(CHUNK_SIZE):
            yield chunk


def wado_uri_action(request: Request) -> Action:
    """What the guard decides first: a download when the parsed `contentType` puts
    application/dicom first, otherwise a view of pixels. Content negotiation may still end in
    the Part 10 file (a listed fallback, an object with no rendering): `_download` then decides
    the download again, on what is sent."""
    try:
        wanted = _content_types(request.query_params)
    except InvalidQuery:
        return Action.READ_PIXELS  # the handler answers 400 itself
    return Action.DOWNLOAD if wanted and wanted[0] == DICOM else Action.READ_PIXELS


def wado_uri_study(request: Request) -> str | None:
    """The study comes from the query; without a valid one the handler answers 400 itself."""
    study = request.query_params.get("studyUID")
    if study is None or not UID(study).is_valid:
        raise InvalidQuery("studyUID: a valid UID is required")
    return study
