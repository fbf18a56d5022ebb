"""STOW-RS: store instances from a multipart/related request (PS3.18 10.5)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from archive.outcomes import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, StoreOutcome
from archive.store import Archive, Prepared
from dicomweb.config import DicomwebConfig
from dicomweb.guard import audit_store_conflicts
from dicomweb.media import InvalidMediaType, parse_content_type
from dicomweb.multipart import MalformedMultipart, ReceivedPart, RelatedPartsReader
from dicomweb.urls import path_uid, public_base
from dicomweb.warning import warning_header
from exchange.models import Transfer
from exchange.parties import Actor
from exchange.sending import add_studies, open_draft
from foundation import metrics
from foundation.errors import (
    BadRequestBody,
    PayloadTooLarge,
    StorageFull,
    UnsupportedMediaType,
    is_disk_full,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
_FEED_SIZE = 1024 * 1024
# Response attributes (PS3.18 Table 10.5.3-1)
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


def _boundary(request: Request) -> bytes:
    header = request.headers.get("content-type", "")
    try:
        media = parse_content_type(header)
    except InvalidMediaType as error:
        raise UnsupportedMediaType(f"Content-Type {header[:200]!r}: {error}") from None
    if media.essence != "multipart/related":
        raise UnsupportedMediaType(
            f'STOW-RS takes multipart/related; type="{DICOM}", not {media.essence}'
        )
    part_type = media.param("type")
    if part_type is not None and part_type.lower() != DICOM:
        raise UnsupportedMediaType(f"STOW-RS takes parts of type {DICOM}, not {part_type}")
    boundary = media.param("boundary")
    if not boundary:
        raise BadRequestBody("the multipart/related Content-Type has no boundary parameter")
    return boundary.encode("latin-1", errors="replace")


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request of {declared} bytes exceeds the limit of {limit} bytes")


class _Intake:
    """Parts become prepared instances as they complete, while the rest of the body streams in."""

    def __init__(self, reader: RelatedPartsReader, archive: Archive) -> None:
        self.reader = reader
        self.archive = archive
        self.items: list[Prepared | StoreOutcome] = []

    def feed(self, pieces: list[bytes]) -> None:
        for data in pieces:
            self._take(self.reader.feed(data))

    def close(self) -> None:
        self._take(self.reader.close())

    def _take(self, parts: list[ReceivedPart]) -> None:
        for part in parts:
            problem = _part_problem(part)
            if problem:
                part.path.unlink(missing_ok=True)
                self.items.append(
                    StoreOutcome("", "", failure_reason=CANNOT_UNDERSTAND, message=problem)
                )
            else:
                self.items.append(self.archive.prepare(part.path))

    def discard(self) -> None:
        """Disconnect, cancellation, a body too large: leave no spooled file behind."""
        self.reader.discard()
        for item in self.items:
            if isinstance(item, Prepared):
                item.parsed.path.unlink(missing_ok=True)


async def _receive(request: Request, config: DicomwebConfig, archive: Archive) -> _Intake:
    """Spool and prepare every part as it arrives; nothing bigger than a MiB sits in memory."""
    limit = config.max_request_bytes
    _check_declared_length(request, limit)
    archive.check_free_space()  # below the reserve nothing new is taken, not even spooled
    boundary = _boundary(request)
    try:
        reader = RelatedPartsReader(boundary, config.spool_dir, max_part_bytes=limit)
    except MalformedMultipart as error:
        raise BadRequestBody(f"unusable multipart boundary: {error}") from None
    intake = _Intake(reader, archive)
    received = 0
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"request exceeds the limit of {limit} bytes")
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= _FEED_SIZE:
                # Parsing, file writes and indexing leave the event loop, one hop per MiB (the
                # pieces as received: joining them would copy every byte once more).
                await anyio.to_thread.run_sync(intake.feed, pending)
                pending, pending_size = [], 0
        if pending:
            await anyio.to_thread.run_sync(intake.feed, pending)
        await anyio.to_thread.run_sync(intake.close)
    except MalformedMultipart as error:
        intake.discard()
        raise BadRequestBody(f"malformed multipart body: {error}") from None
    except OSError as error:
        intake.discard()
        if not is_disk_full(error):
            raise
        log.error("STOW-RS refused, no space left to spool the request: %s", error)
        raise StorageFull("no space left to receive the request; try again later") from None
    except BaseException:
        intake.discard()
        raise
    return intake


def _part_problem(part: ReceivedPart) -> str | None:
    if not part.complete:
        return "part truncated: the body ended before the part's closing boundary"
    if part.too_large:
        return "part exceeds the maximum request size"
    if part.content_type is None:
        return None  # RFC 2046: a part without Content-Type takes the declared type
    try:
        essence = parse_content_type(part.content_type).essence
    except InvalidMediaType:
        essence = part.content_type
    if essence != DICOM:
        return f"part of type {part.content_type[:100]!r} is not {DICOM}"
    return None


def _reference(outcome: StoreOutcome) -> dict[str, Any]:
    return {
        REFERENCED_SOP_CLASS_UID: _ui(outcome.sop_class_uid),
        REFERENCED_SOP_INSTANCE_UID: _ui(outcome.sop_instance_uid),
    }


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(outcomes: list[StoreOutcome], base: str, study: str | None) -> Response:
    """200 when all stored, 202 when some, 409 when none (PS3.18 10.5.3)."""
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    document: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in stored}
    if study or len(studies) == 1:
        document[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base}/studies/{study or studies.pop()}"]}
    if failed:
        document[FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {**_reference(o), FAILURE_REASON: {"vr": "US", "Value": [o.failure_reason]}}
                for o in failed
            ],
        }
    if stored:
        items = []
        for o in stored:
            item = _reference(o)
            url = (
                f"{base}/studies/{o.study_instance_uid}/series/{o.series_instance_uid}"
                f"/instances/{o.sop_instance_uid}"
            )
            item[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
            if o.warnings:
                item[WARNING_REASON] = {"vr": "US", "Value": list(o.warnings)}
            items.append(item)
        document[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": items}
    status = 200 if not failed else (202 if stored else 409)
    if not outcomes:
        status = 409
    headers = {}
    if failed:
        reasons = [f"{o.sop_instance_uid or 'part'}: {o.message}" for o in failed[:10]]
        headers["Warning"] = warning_header(reasons)
    return Response(
        orjson.dumps(document),
        status_code=status,
        media_type="application/dicom+json",
        headers=headers,
    )


def _open_transfer(request: Request) -> Transfer | None:
    """`?transfer=<id>`: the instances go into that draft transfer (upload and send)."""
    public_id = request.query_params.get("transfer")
    if public_id is None:
        return None
    client = request.client.host if request.client else ""
    actor = Actor(request.state.principal, datetime.now(UTC), client, "stow-rs")
    return open_draft(request.app.state.archive.engine, actor, public_id)


def _count_stored(items: list[Prepared | StoreOutcome], outcomes: list[StoreOutcome]) -> None:
    sizes = {i.parsed.sop_instance_uid: i.parsed.size for i in items if isinstance(i, Prepared)}
    stored = [o for o in outcomes if o.stored]
    size = sum(sizes.get(o.sop_instance_uid, 0) for o in stored)
    metrics.record_store("stow-rs", len(stored), len(outcomes) - len(stored), size)


async def store_instances(request: Request) -> Response:
    config: DicomwebConfig = request.app.state.dicomweb
    archive: Archive = request.app.state.archive
    study = path_uid(request, "study") if "study" in request.path_params else None
    transfer = await anyio.to_thread.run_sync(_open_transfer, request)
    try:
        intake = await _receive(request, config, archive)
    except ClientDisconnect:
        log.info("client disconnected during STOW-RS; spooled parts removed")
        return Response(status_code=400)
    if not intake.items:
        raise BadRequestBody("the multipart body holds no parts")
    institution = getattr(request.state, "store_institution_pk", None)
    outcomes = await anyio.to_thread.run_sync(
        archive.store_prepared, intake.items, study, institution
    )
    _count_stored(intake.items, outcomes)
    if outcomes and all(o.failure_reason == OUT_OF_RESOURCES for o in outcomes):
        # Nothing could be kept, for want of space alone: the whole request may be retried.
        archive.check_free_space()  # below the reserve: 507
        raise StorageFull("no space left to store the request; try again later")
    if transfer is not None:
        stored = [o.study_instance_uid for o in outcomes if o.stored]
        await anyio.to_thread.run_sync(add_studies, archive.engine, transfer, stored)
    if any(outcome.conflict for outcome in outcomes):
        await anyio.to_thread.run_sync(audit_store_conflicts, request, outcomes)
    return store_response(outcomes, public_base(request, config), study)
