"""WADO-RS: retrieve instances and metadata (PS3.18 10.4), and delete."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from tempfile import SpooledTemporaryFile

import anyio
from pydicom.uid import UID, ExplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import Response

from archive import transcoding
from archive.blobstore import CHUNK_SIZE, BlobStore
from archive.dicomjson import with_base
from archive.pixel_module import PixelModule
from archive.store import Archive, StoredInstance
from dicomweb.config import DicomwebConfig
from dicomweb.media import InvalidMediaType, MediaRange, accept_header, parse_accept
from dicomweb.multipart import iter_coalesced, iter_multipart_related, new_boundary
from dicomweb.stored_parts import StoredPart, StoredPartsResponse
from dicomweb.streaming import PrimedStreamingResponse
from dicomweb.urls import path_uid, public_base
from exchange.transfer_facts import remember_transfer_facts
from foundation.errors import InvalidQuery, NotAcceptable

log = logging.getLogger(__name__)

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


# Stands for "no transfer-syntax parameter": Explicit VR Little Endian, the default of
# application/dicom (PS3.18 8.7.3.5.2, since 2016c), for each instance that can be made so.
DEFAULT_SYNTAX = "default"
Targets = dict[str, str]  # SOP Instance UID -> the transfer syntax it is sent in


def _acceptable_syntaxes(ranges: list[MediaRange]) -> tuple[list[str | None], list[str]]:
    """Transfer syntaxes the client takes, most preferred first; None stands for "as stored".

    `*/*` and `multipart/*` take any representation, so what is stored. A value that is not a
    transfer syntax UID is ignored, as PS3.18 8.7.7 says of any invalid or unsupported Accept
    value; it is named in the 406 if nothing else is left.
    """
    choices: list[str | None] = []
    ignored: list[str] = []
    for media in ranges:
        if not _wants_dicom(media):
            continue
        syntax = media.param("transfer-syntax")
        if syntax == _ANY_TRANSFER_SYNTAX or media.essence != "multipart/related":
            choices.append(None)
        elif syntax is None:
            choices.append(DEFAULT_SYNTAX)
        elif UID(syntax).is_valid and UID(syntax).is_transfer_syntax:
            choices.append(syntax)
        else:
            ignored.append(syntax)
    return choices, ignored


def negotiate_transfer_syntax(
    ranges: list[MediaRange],
    instances: list[StoredInstance],
    read_pixels: Callable[[StoredInstance], PixelModule],
) -> Targets:
    """The transfer syntax each instance is sent in, from the first acceptable choice.

    A named transfer syntax must be producible for every instance, or the next choice is
    tried (406 when none is left). The default, Explicit VR Little Endian, is sent wherever
    it can be produced; an instance that cannot be decoded (a video, a codec Ferry lacks)
    goes as stored, its part's Content-Type saying so. Headers are read only where a
    codec's limits could matter.
    """
    choices, ignored = _acceptable_syntaxes(ranges)
    if not choices and not ignored:
        raise NotAcceptable(f'instances are available as multipart/related; type="{DICOM}"')
    refusals = [f"{value!r} is not a transfer syntax UID" for value in ignored]
    headers: dict[str, PixelModule] = {}
    for choice in choices:
        if choice is None:
            return {i.sop_instance_uid: i.transfer_syntax_uid for i in instances}
        if choice == DEFAULT_SYNTAX:
            return _default_targets(instances, headers, read_pixels)
        refusal = _first_refusal(choice, instances, headers, read_pixels)
        if refusal is None:
            return {i.sop_instance_uid: choice for i in instances}
        refusals.append(f"{choice}: {refusal}")
    raise NotAcceptable("no acceptable transfer syntax can be produced: " + "; ".join(refusals))


def _default_targets(
    instances: list[StoredInstance],
    headers: dict[str, PixelModule],
    read_pixels: Callable[[StoredInstance], PixelModule],
) -> Targets:
    targets: Targets = {}
    for instance in instances:
        refusal = _refusal(ExplicitVRLittleEndian, instance, headers, read_pixels)
        if refusal is not None:
            log.info("%s sent as stored: %s", instance.sop_instance_uid, refusal)
        explicit = refusal is None
        targets[instance.sop_instance_uid] = (
            ExplicitVRLittleEndian if explicit else instance.transfer_syntax_uid
        )
    return targets


def _first_refusal(
    target: str,
    instances: list[StoredInstance],
    headers: dict[str, PixelModule],
    read_pixels: Callable[[StoredInstance], PixelModule],
) -> str | None:
    for instance in instances:
        reason = _refusal(target, instance, headers, read_pixels)
        if reason is not None:
            stored = instance.transfer_syntax_uid
            return (
                f"instance {instance.sop_instance_uid} is stored as {UID(stored).name} "
                f"({stored}); {reason}"
            )
    return None


def _refusal(
    target: str,
    instance: StoredInstance,
    headers: dict[str, PixelModule],
    read_pixels: Callable[[StoredInstance], PixelModule],
) -> str | None:
    stored = instance.transfer_syntax_uid
    if stored == target or {stored, target} <= transcoding.NATIVE:
        return None
    key = instance.sop_instance_uid
    if key not in headers:
        headers[key] = read_pixels(instance)
    return transcoding.reason_not_producible(stored, target, headers[key])


def _read_pixels(blobs: BlobStore, instance: StoredInstance) -> PixelModule:
    with blobs.open(instance.blob_key) as fp:
        return transcoding.read_pixels(fp)  # bad values tolerated: refused as not producible


def _sent_syntax(instance: StoredInstance, targets: Targets) -> str:
    return targets[instance.sop_instance_uid]


def _part_type(transfer_syntax: str) -> str:
    return f"{DICOM}; transfer-syntax={transfer_syntax}"


def _iter_transcoded(blobs: BlobStore, instance: StoredInstance, target: str) -> Iterator[bytes]:
    """One instance at a time, spooled (to disk past SPOOL_BYTES), then streamed."""
    with (
        blobs.open(instance.blob_key) as source,
        SpooledTemporaryFile(max_size=transcoding.SPOOL_BYTES, dir=str(blobs.spool_dir)) as spool,
    ):
        try:
            transcoding.transcode(source, target, spool)
        except Exception:  # the response has started: all that is left is to cut it short
            log.exception("transcoding %s to %s failed", instance.sop_instance_uid, target)
            raise
        spool.seek(0)
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
    """Runs in a worker thread: the instances and what each is sent in, in one hop."""
    instances = archive.find_instances(study, series, instance)
    read_pixels = partial(_read_pixels, archive.blobs)
    return instances, negotiate_transfer_syntax(ranges, instances, read_pixels)


async def retrieve_instances(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    ranges = _accept(request)
    study, series, instance = _scope(request)
    instances, targets = await anyio.to_thread.run_sync(
        _find_and_negotiate, archive, ranges, study, series, instance
    )
    boundary = new_boundary()
    if all(_sent_syntax(i, targets) == i.transfer_syntax_uid for i in instances):
        parts = [
            StoredPart(_part_type(i.transfer_syntax_uid), i.blob_key, i.size) for i in instances
        ]
        return StoredPartsResponse(archive.blobs, parts, boundary)
    # Transcoded sizes are unknown until made: the body goes out chunked.
    return PrimedStreamingResponse(
        iter_coalesced(
            iter_multipart_related(_iter_parts(archive.blobs, instances, targets), boundary)
        ),
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )


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
    return Response(status_code=204)
