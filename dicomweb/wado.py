"""WADO-RS: retrieve instances and metadata (PS3.18 10.4), and delete.

Which transfer syntax each instance is sent in is `dicomweb.transfer_syntax`'s rule.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

import anyio
from starlette.requests import Request
from starlette.responses import Response

from archive.blobstore import CHUNK_SIZE, BlobStore
from archive.dicomjson import with_base
from archive.store import Archive, StoredInstance
from dicomweb.config import DicomwebConfig
from dicomweb.media import InvalidMediaType, MediaRange, accept_header, parse_accept
from dicomweb.multipart import iter_coalesced, iter_multipart_related, new_boundary
from dicomweb.stored_parts import StoredPart, StoredPartsResponse
from dicomweb.streaming import PrimedStreamingResponse
from dicomweb.transfer_syntax import (
    DICOM,
    Targets,
    negotiate_transfer_syntax,
    read_stored_pixels,
    spool_transcoded,
)
from dicomweb.urls import path_uid, public_base
from exchange.transfer_endings import note_study_deleted
from exchange.transfer_facts import remember_transfer_facts
from foundation.errors import InvalidQuery, NotAcceptable, StoredDataUnreadable

log = logging.getLogger(__name__)

_METADATA_TYPES = {"application/dicom+json", "application/json", "*/*", "application/*"}


def _accept(request: Request) -> list[MediaRange]:
    try:
        return parse_accept(accept_header(request.headers.getlist("accept")))
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None


def _sent_syntax(instance: StoredInstance, targets: Targets) -> str:
    return targets[instance.sop_instance_uid]


def _part_type(transfer_syntax: str) -> str:
    return f"{DICOM}; transfer-syntax={transfer_syntax}"


def _iter_transcoded(blobs: BlobStore, instance: StoredInstance, target: str) -> Iterator[bytes]:
    """One instance at a time, spooled (to disk past SPOOL_BYTES), then streamed."""
    try:
        spool = spool_transcoded(blobs, instance, target)
    except StoredDataUnreadable as error:
        # A 422 if this is the first part; once the response has started, a cut.
        log.warning("transcoding %s to %s failed: %s", instance.sop_instance_uid, target, error)
        raise
    except Exception:  # the response may have started: all that is left is to cut it short
        log.exception("transcoding %s to %s failed", instance.sop_instance_uid, target)
        raise
    with spool:
        while chunk := spool.read(CHUNK_SIZE):
            yield chunk


def _iter_parts(
    blobs: BlobStore, instances: list[StoredInstance], targets: Targets
) -> Iterator[tuple[str, Iterator[bytes]]]:
    for instance in instances:
        syntax = _sent_syntax(instance, targets)
        if syntax == instance.transfer_syntax_uid:
            yield _part_type(syntax), blobs.iter_chunks(instance.blob_key)
        else:
            yield _part_type(syntax), _iter_transcoded(blobs, instance, syntax)


def _scope(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    return (
        path_uid(request, "study"),
        path_uid(request, "series") if "series" in params else None,
        path_uid(request, "instance") if "instance" in params else None,
    )


def _find_and_negotiate(
    archive: Archive,
    ranges: list[MediaRange],
    study: str,
    series: str | None,
    instance: str | None,
) -> tuple[list[StoredInstance], Targets]:
    """Blocks: the instances and what each is sent in."""
    instances = archive.find_instances(study, series, instance)
    read_pixels = partial(read_stored_pixels, archive.blobs)
    return instances, negotiate_transfer_syntax(ranges, instances, read_pixels)


def retrieve_instances(request: Request) -> Response:
    """Runs in the guard's worker thread (`guarded_blocking`): the instances, what each is sent
    in, and, where they go as stored, the first blobs opened; the response that sends them."""
    archive: Archive = request.app.state.archive
    ranges = _accept(request)
    study, series, instance = _scope(request)
    instances, targets = _find_and_negotiate(archive, ranges, study, series, instance)
    boundary = new_boundary()
    if all(_sent_syntax(i, targets) == i.transfer_syntax_uid for i in instances):
        parts = [
            StoredPart(_part_type(i.transfer_syntax_uid), i.blob_key, i.size) for i in instances
        ]
        response = StoredPartsResponse(archive.blobs, parts, boundary)
        response.open_first(request.scope)
        return response
    # Transcoded sizes are unknown until made: the body goes out chunked.
    return PrimedStreamingResponse(
        iter_coalesced(
            iter_multipart_related(_iter_parts(archive.blobs, instances, targets), boundary)
        ),
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )


def answer_retrieval(_request: Request, response: Response) -> Response:
    return response


def _etag(request: Request, version: object, base: str) -> str:
    digest = hashlib.sha256(f"{request.url.path}|{version}|{base}".encode()).hexdigest()
    return f'"{digest[:32]}"'


async def retrieve_metadata(request: Request) -> Response:
    config: DicomwebConfig = request.app.state.dicomweb
    archive: Archive = request.app.state.archive
    if not any(r.essence in _METADATA_TYPES for r in _accept(request)):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    study, series, instance = _scope(request)
    base = public_base(request, config)
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
    # Should the study go, its transfers keep its patient's facts (harmless if it stays).
    await anyio.to_thread.run_sync(remember_transfer_facts, archive.engine, study)
    await anyio.to_thread.run_sync(archive.delete, study, series, instance)
    # Its transfers with no study left say so ("deleted", by whoever deleted it).
    actor = request.state.principal.label
    await anyio.to_thread.run_sync(
        note_study_deleted, archive.engine, study, actor, datetime.now(UTC)
    )
    return Response(status_code=204)
