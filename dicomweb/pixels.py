"""WADO-RS frames and bulk data (PS3.18 10.4.1.1.3, 10.4.1.1.5), streamed from the stored file.

Frames are located without decoding (`archive.frames`) and sent as stored when the client takes
that (`dicomweb.pixelmedia`); only the frames of the request are ever decoded, and only when
uncompressed frames are asked of compressed ones.

Bulk data is the value a BulkDataURI from /metadata names. Pixel Data (7FE0,0010) answers its
whole value when native, and when encapsulated its frames, one part each, negotiated as frames
are (a video stream is one part). Other values are streamed from their byte range in the file;
an Encapsulated Document may also be asked for in its MIME Type of Encapsulated Document.
Single-part answers honour `Range: bytes=` (PS3.18 8.6.1 and RFC 9110 14).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response

from archive.blobstore import BlobStore
from archive.bulkdata import (
    BulkValue,
    iter_bulk_value,
    locate_bulk_value,
    parse_bulk_path,
    value_spans,
)
from archive.framecache import open_pixel_data, read_layout
from archive.frames import (
    PIXEL_DATA_TAGS,
    FrameLocation,
    PixelDataLayout,
    iter_frame,
    read_frame,
)
from archive.store import Archive, StoredInstance
from dicomweb.capabilities import Capability, declare
from dicomweb.config import DicomwebConfig
from dicomweb.decoding import decode_frame
from dicomweb.errors import error_response
from dicomweb.file_spans import FileSpansResponse
from dicomweb.media import InvalidMediaType, MediaRange, accept_header, parse_accept
from dicomweb.multipart import (
    iter_multipart_related,
    multipart_length,
    new_boundary,
)
from dicomweb.pixelmedia import OCTET_STREAM, FrameRepresentation, negotiate_frames
from dicomweb.streaming import PrimedStreamingResponse
from dicomweb.urls import path_uid
from dicomweb.warning import warning_header
from foundation.byte_ranges import RangeNotSatisfiable, parse_range
from foundation.errors import InvalidQuery, NotAcceptable, NotFound

MAX_FRAMES_PER_REQUEST = 10_000
ENCAPSULATED_DOCUMENT = 0x00420011
MIME_TYPE_OF_ENCAPSULATED_DOCUMENT = 0x00420012
_FRAME_LIST = re.compile(r"^[0-9]{1,18}(,[0-9]{1,18})*$")
_COALESCE_BYTES = 256 * 1024  # small frames are sent in chunks of about this size
_IN_MEMORY_BYTES = 4 * 1024 * 1024  # a multipart answer up to this size is made whole, then sent
_FRAME_TYPES = (f'multipart/related; type="{OCTET_STREAM}"', 'multipart/related; type="image/*"')
_Range = tuple[str | None, str | None]  # the Range and If-Range headers


class FrameNotFound(NotFound):
    pass


def parse_frame_numbers(text: str) -> list[int]:
    """`1`, `1,3,5`: frame numbers from 1, in the order asked (PS3.18 8.3.3.1 frame list)."""
    if not _FRAME_LIST.match(text):
        raise InvalidQuery(
            f"frame list {text[:80]!r} is not comma-separated frame numbers, such as 1,3,5"
        )
    numbers = [int(part) for part in text.split(",")]
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidQuery(f"at most {MAX_FRAMES_PER_REQUEST} frames can be asked for at once")
    if 0 in numbers:
        raise InvalidQuery("frame numbers start at 1")
    return numbers


def _accept(request: Request) -> list[MediaRange]:
    """The `accept` query parameter, when given, stands for the header (PS3.18 8.3.3.1)."""
    values = request.query_params.getlist("accept") or request.headers.getlist("accept")
    try:
        return parse_accept(accept_header(values))
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None


async def _find_instance(request: Request) -> StoredInstance:
    archive: Archive = request.app.state.archive
    study, series, instance = (path_uid(request, n) for n in ("study", "series", "instance"))
    (stored,) = await anyio.to_thread.run_sync(archive.find_instances, study, series, instance)
    return stored


async def _layout(request: Request, stored: StoredInstance) -> PixelDataLayout:
    archive: Archive = request.app.state.archive
    config: DicomwebConfig = request.app.state.dicomweb
    cache_dir: Path = config.data_dir / "cache" / "frames"
    return await anyio.to_thread.run_sync(read_layout, archive.blobs, stored.blob_key, cache_dir)


@declare(Capability("WADO-RS", produces=_FRAME_TYPES))
async def retrieve_frames(request: Request) -> Response:
    numbers = parse_frame_numbers(request.path_params["frames"])
    ranges = _accept(request)
    uids = (path_uid(request, "study"), path_uid(request, "series"), path_uid(request, "instance"))
    config: DicomwebConfig = request.app.state.dicomweb
    # One hop to a worker thread for the lookup, the layout and (when small) the body.
    return await anyio.to_thread.run_sync(
        _frames_answer,
        request.app.state.archive,
        config.data_dir / "cache" / "frames",
        uids,
        numbers,
        ranges,
        _range(request),
    )


def _frames_answer(
    archive: Archive,
    cache_dir: Path,
    uids: tuple[str, str, str],
    numbers: list[int],
    ranges: list[MediaRange],
    wanted: _Range,
) -> Response:
    """Runs in a worker thread: find the instance, its frames, and answer."""
    (stored,) = archive.find_instances(*uids)
    layout = read_layout(archive.blobs, stored.blob_key, cache_dir)
    if layout.video:
        raise NotAcceptable("a video's frames are one stream: retrieve its bulk data")
    count = len(layout.frames)
    beyond = sorted({n for n in numbers if n > count})
    if beyond:
        raise FrameNotFound(f"the instance has {count} frame(s); no frame {beyond[0]}")
    representation = negotiate_frames(
        ranges, layout.transfer_syntax_uid, single_part=len(numbers) == 1
    )
    locations = [layout.frames[n - 1] for n in numbers]
    response = _frames_response(
        archive.blobs, stored.blob_key, layout, locations, representation, wanted
    )
    if layout.pixel.notes:  # values read leniently, e.g. a Number of Frames that is no number
        response.headers["Warning"] = warning_header(layout.pixel.notes)
    return response


def _frames_response(
    blobs: BlobStore,
    key: str,
    layout: PixelDataLayout,
    locations: list[FrameLocation],
    representation: FrameRepresentation,
    wanted: _Range,
) -> Response:
    """Runs in a worker thread: a single decoded frame is made here, before the answer starts."""
    if not representation.multipart:
        (location,) = locations
        if representation.decode or location.bit_count:
            return _single_in_memory(blobs, key, layout, location, representation)
        return _single_part(
            blobs, key, BulkValue(location.ranges), representation.content_type, wanted, layout
        )
    boundary = new_boundary()
    parts = _iter_frame_parts(blobs, key, layout, locations, representation)
    media_type = f'multipart/related; type="{representation.media_type}"; boundary={boundary}'
    headers = {}
    if not representation.decode:
        sizes = [(representation.content_type, location.length) for location in locations]
        length = multipart_length(sizes, boundary)
        if length <= _IN_MEMORY_BYTES:
            # A frame or a few: read here, in this thread, and sent whole; streaming them
            # would cost a hop to a worker thread for every chunk.
            body = b"".join(iter_multipart_related(parts, boundary))
            return Response(body, media_type=media_type)
        headers["Content-Length"] = str(length)
    chunks = _coalesce(iter_multipart_related(parts, boundary))
    bit_packed = any(location.bit_count for location in locations)
    if not representation.decode and not bit_packed and _as_stored(layout):
        ranges = ((representation.content_type, loc.ranges) for loc in locations)
        return FileSpansResponse.multipart(
            chunks, blobs, key, boundary, ranges, media_type=media_type, headers=headers
        )
    return PrimedStreamingResponse(chunks, media_type=media_type, headers=headers)


def _as_stored(layout: PixelDataLayout | None) -> bool:
    """Whether the layout's offsets are the stored file's own (a deflated file's are not)."""
    return layout is None or not layout.inflated_from


def _iter_frame_parts(
    blobs: BlobStore,
    key: str,
    layout: PixelDataLayout,
    locations: list[FrameLocation],
    representation: FrameRepresentation,
) -> Iterator[tuple[str, Iterable[bytes]]]:
    """One open file for all parts; a frame is read (and decoded) only when its turn comes."""
    with open_pixel_data(blobs, key, layout) as handle:
        for location in locations:
            if representation.decode:
                yield (
                    representation.content_type,
                    [decode_frame(read_frame(handle, location), layout)],
                )
            else:
                yield representation.content_type, iter_frame(handle, location)


def _single_in_memory(
    blobs: BlobStore,
    key: str,
    layout: PixelDataLayout,
    location: FrameLocation,
    representation: FrameRepresentation,
) -> Response:
    """One decoded or bit-packed frame: made in memory (it is one frame), sent without Range."""
    with open_pixel_data(blobs, key, layout) as handle:
        body = read_frame(handle, location)
    if representation.decode:
        body = decode_frame(body, layout)
    return Response(body, media_type=representation.content_type)


def _coalesce(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Fewer, larger writes: each chunk of a sync iterator costs a hop to a worker thread."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) >= _COALESCE_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _range(request: Request) -> _Range:
    return request.headers.get("range"), request.headers.get("if-range")


def _single_part(
    blobs: BlobStore,
    key: str,
    value: BulkValue,
    content_type: str,
    asked: _Range,
    layout: PixelDataLayout | None = None,
) -> Response:
    """The value as the whole body, or the one byte range asked for (206, or 416)."""
    try:
        wanted = parse_range(asked[0], value.length, asked[1])
    except RangeNotSatisfiable as error:
        response = error_response(416, str(error))
        response.headers["Content-Range"] = f"bytes */{error.length}"
        return response
    start, end = (wanted.start, wanted.end) if wanted else (0, value.length)
    headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
    if wanted:
        headers["Content-Range"] = wanted.content_range
    chunks = _coalesce(_iter_value(blobs, key, value, start, end, layout))
    status = 206 if wanted else 200
    if value.data is None and _as_stored(layout):
        spans = [(b"", offset, count) for offset, count in value_spans(value, start, end)]
        return FileSpansResponse(
            chunks, blobs, key, spans, status_code=status, media_type=content_type, headers=headers
        )
    return PrimedStreamingResponse(
        chunks, status_code=status, media_type=content_type, headers=headers
    )


def _iter_value(
    blobs: BlobStore,
    key: str,
    value: BulkValue,
    start: int,
    end: int,
    layout: PixelDataLayout | None = None,
) -> Iterator[bytes]:
    """The value's bytes; pixel data (with its layout) read as frames are, deflated or not."""
    if layout is None:
        with blobs.open(key) as handle:
            yield from iter_bulk_value(handle, value, start, end)
        return
    with open_pixel_data(blobs, key, layout) as handle:
        yield from iter_bulk_value(handle, value, start, end)


@declare(
    Capability("WADO-RS", produces=(f'multipart/related; type="{OCTET_STREAM}"', OCTET_STREAM))
)
async def retrieve_bulk_data(request: Request) -> Response:
    steps = parse_bulk_path(request.path_params["path"])
    ranges = _accept(request)
    stored = await _find_instance(request)
    if len(steps) == 1 and steps[0] in PIXEL_DATA_TAGS:
        return await _retrieve_pixel_data(request, stored, ranges)
    blobs: BlobStore = request.app.state.archive.blobs
    value, document_type = await anyio.to_thread.run_sync(_locate, blobs, stored, steps)
    multipart, media_type = negotiate_bulk(ranges, document_type)
    if not multipart:
        return _single_part(blobs, stored.blob_key, value, media_type, _range(request))
    return _one_part(blobs, stored.blob_key, value, media_type, media_type)


def _locate(
    blobs: BlobStore, stored: StoredInstance, steps: list[int]
) -> tuple[BulkValue, str | None]:
    """The value's place, and for an Encapsulated Document the MIME type it is in."""
    syntax = stored.transfer_syntax_uid
    with blobs.open(stored.blob_key) as handle:
        value = locate_bulk_value(handle, steps, syntax)
        if steps != [ENCAPSULATED_DOCUMENT]:
            return value, None
        try:
            mime = locate_bulk_value(handle, [MIME_TYPE_OF_ENCAPSULATED_DOCUMENT], syntax)
        except NotFound:
            return value, None
        text = b"".join(iter_bulk_value(handle, mime)).decode("ascii", "replace")
    return value, text.strip(" \x00") or None


def negotiate_bulk(ranges: list[MediaRange], document_type: str | None) -> tuple[bool, str]:
    """(multipart?, media type): octet-stream always, a document also in its own type."""
    offers = [OCTET_STREAM, *([document_type] if document_type else [])]
    for media in ranges:
        if media.essence in ("*/*", "multipart/*"):
            return True, OCTET_STREAM
        multipart = media.essence == "multipart/related"
        asked = (media.param("type") or OCTET_STREAM).lower() if multipart else media.essence
        for offer in offers:
            if asked in (offer.lower(), "*/*") or (
                asked.endswith("/*") and offer.lower().startswith(asked[:-1])
            ):
                return multipart, offer
    raise NotAcceptable(f"this bulk data is available as {' or '.join(offers)}")


async def _retrieve_pixel_data(
    request: Request, stored: StoredInstance, ranges: list[MediaRange]
) -> Response:
    """Encapsulated: the frames, a part each. Native: the whole value. Video: the stream."""
    layout = await _layout(request, stored)
    blobs: BlobStore = request.app.state.archive.blobs
    syntax = layout.transfer_syntax_uid
    frames = list(layout.frames)
    if layout.encapsulated and not layout.video:
        representation = negotiate_frames(ranges, syntax, single_part=len(frames) == 1)
        return await anyio.to_thread.run_sync(
            _frames_response,
            blobs,
            stored.blob_key,
            layout,
            frames,
            representation,
            _range(request),
        )
    representation = negotiate_frames(ranges, syntax, single_part=True)
    if representation.decode:  # native big endian, asked for as little endian
        parts = _iter_frame_parts(blobs, stored.blob_key, layout, frames, representation)
        chunks = (chunk for _, frame in parts for chunk in frame)
        return _one_stream(chunks, representation, multipart=representation.multipart)
    if layout.video:
        value = BulkValue(frames[0].ranges)
    else:
        value = BulkValue(((layout.value_offset, layout.value_length),))
    content_type = representation.content_type
    if not representation.multipart:
        return _single_part(blobs, stored.blob_key, value, content_type, _range(request), layout)
    return _one_part(blobs, stored.blob_key, value, content_type, representation.media_type, layout)


def _one_part(
    blobs: BlobStore,
    key: str,
    value: BulkValue,
    content_type: str,
    multipart_type: str,
    layout: PixelDataLayout | None = None,
) -> Response:
    boundary = new_boundary()
    parts = [(content_type, _iter_value(blobs, key, value, 0, value.length, layout))]
    length = multipart_length([(content_type, value.length)], boundary)
    chunks = _coalesce(iter_multipart_related(parts, boundary))
    media_type = f'multipart/related; type="{multipart_type}"; boundary={boundary}'
    headers = {"Content-Length": str(length)}
    if value.data is None and _as_stored(layout):
        ranges = [(content_type, value_spans(value))]
        return FileSpansResponse.multipart(
            chunks, blobs, key, boundary, ranges, media_type=media_type, headers=headers
        )
    return PrimedStreamingResponse(chunks, media_type=media_type, headers=headers)


def _one_stream(
    chunks: Iterable[bytes], representation: FrameRepresentation, *, multipart: bool
) -> Response:
    if not multipart:
        return PrimedStreamingResponse(_coalesce(chunks), media_type=representation.content_type)
    boundary = new_boundary()
    return PrimedStreamingResponse(
        _coalesce(iter_multipart_related([(representation.content_type, chunks)], boundary)),
        media_type=f'multipart/related; type="{representation.media_type}"; boundary={boundary}',
    )
