"""WADO-RS: retrieve instances and metadata (PS3.18 10.4), and delete."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from archive.blobstore import BlobStore
from archive.dicomjson import with_base
from archive.store import Archive, StoredInstance
from dicomweb.media import InvalidMediaType, MediaRange, accept_header, parse_accept
from dicomweb.multipart import iter_multipart_related, multipart_length, new_boundary
from dicomweb.urls import path_uid, public_base
from ferry.errors import InvalidQuery, NotAcceptable
from ferry.settings import Settings

DICOM = "application/dicom"
_ANY_TRANSFER_SYNTAX = "*"
_METADATA_TYPES = {"application/dicom+json", "application/json", "*/*", "application/*"}


def _accept(request: Request) -> list[MediaRange]:
    try:
        return parse_accept(accept_header(request.headers.getlist("accept")))
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None


def _wants_dicom(media: MediaRange) -> bool:
    if media.essence in {"*/*", "multipart/*"}:
        return True
    if media.essence != "multipart/related":
        return False
    part_type = media.param("type")
    return part_type is None or part_type.lower() == DICOM


def negotiate_transfer_syntax(ranges: list[MediaRange], stored: set[str]) -> None:
    """Return what is stored when the client takes it; transcoding comes with the viewing work.

    Without a transfer-syntax parameter Ferry sends what is stored, as `*` does: PS3.18 would
    default to Explicit VR Little Endian, which is the same bytes for most archives' content.
    """
    asked: list[str] = []
    for media in ranges:
        if not _wants_dicom(media):
            continue
        syntax = media.param("transfer-syntax")
        if syntax is None or syntax == _ANY_TRANSFER_SYNTAX or {syntax} >= stored:
            return
        asked.append(syntax)
    if asked:
        raise NotAcceptable(
            f"instances are stored as {', '.join(sorted(stored))}; "
            f"transcoding to {', '.join(asked)} is not available"
        )
    raise NotAcceptable(f'instances are available as multipart/related; type="{DICOM}"')


def _part_type(instance: StoredInstance) -> str:
    return f"{DICOM}; transfer-syntax={instance.transfer_syntax_uid}"


def _iter_parts(
    blobs: BlobStore, instances: list[StoredInstance]
) -> Iterator[tuple[str, Iterator[bytes]]]:
    for instance in instances:
        yield _part_type(instance), blobs.iter_chunks(instance.blob_key)


def _scope(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    return (
        path_uid(request, "study"),
        path_uid(request, "series") if "series" in params else None,
        path_uid(request, "instance") if "instance" in params else None,
    )


async def retrieve_instances(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    ranges = _accept(request)
    study, series, instance = _scope(request)
    instances = await anyio.to_thread.run_sync(archive.find_instances, study, series, instance)
    negotiate_transfer_syntax(ranges, {i.transfer_syntax_uid for i in instances})
    boundary = new_boundary()
    length = multipart_length([(_part_type(i), i.size) for i in instances], boundary)
    return StreamingResponse(
        iter_multipart_related(_iter_parts(archive.blobs, instances), boundary),
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
        headers={"Content-Length": str(length)},
    )


def _etag(request: Request, version: object, base: str) -> str:
    digest = hashlib.sha256(f"{request.url.path}|{version}|{base}".encode()).hexdigest()
    return f'"{digest[:32]}"'


async def retrieve_metadata(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    archive: Archive = request.app.state.archive
    if not any(r.essence in _METADATA_TYPES for r in _accept(request)):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    study, series, instance = _scope(request)
    base = public_base(request, settings)
    headers: dict[str, str] = {}
    if series is not None and instance is None:
        version = await anyio.to_thread.run_sync(archive.series_version, study, series)
        etag = _etag(request, version, base)
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
    documents = await anyio.to_thread.run_sync(archive.read_metadata, study, series, instance)
    body = with_base(b"[" + b",".join(documents) + b"]", base)
    return Response(body, media_type="application/dicom+json", headers=headers)


async def delete_instances(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    study, series, instance = _scope(request)
    await anyio.to_thread.run_sync(archive.delete, study, series, instance)
    return Response(status_code=204)


async def retrieve_bulk_data(request: Request) -> Response:
    """One part, application/octet-stream, per PS3.18 10.4.1.1.5."""
    archive: Archive = request.app.state.archive
    accepted = {r.essence for r in _accept(request)}
    if not accepted & {"*/*", "multipart/related", "multipart/*", "application/octet-stream"}:
        raise NotAcceptable("bulk data is available as application/octet-stream")
    study, series, instance = _scope(request)
    assert series is not None and instance is not None
    value = await anyio.to_thread.run_sync(
        archive.read_bulk_data, study, series, instance, request.path_params["path"]
    )
    if "multipart/related" not in accepted and "application/octet-stream" in accepted:
        return Response(value, media_type="application/octet-stream")
    boundary = new_boundary()
    body = b"".join(iter_multipart_related([("application/octet-stream", [value])], boundary))
    return Response(
        body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    )
