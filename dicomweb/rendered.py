"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.6, 10.4.3, 8.3.5.1).

A study or series is rendered by a representative instance: the middle instance (by
InstanceNumber) of the series, or, for a study, of its first series (by SeriesNumber) that
is not a structured report, presentation state or encapsulated document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import anyio
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from archive.store import Archive, StoredInstance
from dicomweb.config import DicomwebConfig
from dicomweb.media import InvalidMediaType, accept_header, parse_accept
from dicomweb.rendering import (
    DEFAULT_QUALITY,
    Rendered,
    RenderOptions,
    Viewport,
    Window,
    render_stored,
)
from dicomweb.thumbnails import ThumbnailCache, thumbnail_dir
from dicomweb.urls import path_uid
from dicomweb.voi import WINDOW_FUNCTIONS
from dicomweb.warning import warning_header
from foundation.errors import InvalidQuery

THUMBNAIL_VIEWPORT = Viewport(128, 128)
CACHE_CONTROL = "private, max-age=3600"
_RENDERED_PARAMETERS = {"accept", "annotation", "quality", "viewport", "window", "charset"}
_THUMBNAIL_PARAMETERS = {"accept", "viewport", "charset"}
# Not pictures: structured reports and key objects, presentation states, documents.
_NOT_PICTURES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
)


def single(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise InvalidQuery(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def parse_number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidQuery(f"{name} {text[:40]!r} is not a number") from None


def parse_integer(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidQuery(f"{name} {text[:40]!r} is not a whole number") from None


def parse_window(text: str) -> Window:
    """`window=center,width,function`, function one of linear, linear-exact, sigmoid."""
    parts = text.split(",")
    if len(parts) != 3:
        raise InvalidQuery(f"window {text[:60]!r} must be center,width,function")
    center, width = parse_number("window center", parts[0]), parse_number("window width", parts[1])
    function = parts[2].strip().lower()
    if function not in WINDOW_FUNCTIONS:
        names = ", ".join(WINDOW_FUNCTIONS)
        raise InvalidQuery(f"window function {parts[2][:40]!r} is not one of {names}")
    return Window(center, width, WINDOW_FUNCTIONS[function])


def parse_viewport(text: str) -> Viewport:
    """`viewport=vw,vh` or `vw,vh,sx,sy,sw,sh`; sx..sh may be left empty for their defaults."""
    parts = text.split(",")
    if len(parts) not in (2, 6):
        raise InvalidQuery(f"viewport {text[:60]!r} must be vw,vh or vw,vh,sx,sy,sw,sh")
    sizes = [parse_integer("viewport size", p) for p in parts[:2]]
    source = [parse_integer("viewport source", p) if p.strip() else None for p in parts[2:]]
    return Viewport(*sizes, *source)


def parse_quality(text: str) -> int:
    quality = parse_integer("quality", text)
    if not 1 <= quality <= 100:
        raise InvalidQuery(f"quality {quality} must be between 1 and 100")
    return quality


def _unknown(params: QueryParams, known: set[str], resource: str) -> list[str]:
    return [
        f"{name} is not a {resource} parameter; ignored" for name in params if name not in known
    ]


def _rendered_options(params: QueryParams) -> tuple[RenderOptions, list[str]]:
    warnings = _unknown(params, _RENDERED_PARAMETERS, "rendered")
    if single(params, "annotation") is not None:
        warnings.append("annotation is not burnt in; ignored")
    window, viewport, quality = (single(params, n) for n in ("window", "viewport", "quality"))
    options = RenderOptions(
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None else None,
        quality=parse_quality(quality) if quality is not None else DEFAULT_QUALITY,
    )
    return options, warnings


def _thumbnail_options(params: QueryParams) -> tuple[RenderOptions, list[str]]:
    warnings = _unknown(params, _THUMBNAIL_PARAMETERS, "thumbnail")
    viewport = single(params, "viewport")
    return RenderOptions(
        viewport=parse_viewport(viewport) if viewport is not None else THUMBNAIL_VIEWPORT
    ), warnings


def accepted_types(request: Request) -> list[str]:
    """The `accept` query parameter, if given, stands for the Accept header (PS3.18 8.3.3.1)."""
    asked = single(request.query_params, "accept")
    header = asked if asked is not None else accept_header(request.headers.getlist("accept"))
    try:
        return [media.essence for media in parse_accept(header)]
    except InvalidMediaType as error:
        raise InvalidQuery(f"Accept: {error}") from None


def parse_frame_list(text: str) -> list[int]:
    numbers = [parse_integer("frame number", part) for part in text.split(",")]
    for number in numbers:
        if number < 1:
            raise InvalidQuery(f"frame number {number} must be 1 or more")
    return numbers


def representative(instances: Sequence[StoredInstance], study_level: bool) -> StoredInstance:
    """The middle instance of a series; of a study, of its first series of pictures."""
    series: dict[str, list[StoredInstance]] = {}
    for instance in instances:  # already ordered by series number, then instance number
        series.setdefault(instance.series_instance_uid, []).append(instance)
    middles = [members[len(members) // 2] for members in series.values()]
    if study_level:
        pictures = [m for m in middles if not m.sop_class_uid.startswith(_NOT_PICTURES)]
        return (pictures or middles)[0]
    return middles[0]


def _digest(
    stored: StoredInstance, frames: object, options: RenderOptions, accepted: object, kind: str
) -> str:
    """Names what would be rendered: the stored bytes (a replaced instance has a new key)."""
    text = f"{kind}|{stored.blob_key}|{frames}|{options!r}|{accepted}"
    return hashlib.sha256(text.encode()).hexdigest()


async def retrieve_rendered(request: Request) -> Response:
    options, warnings = _rendered_options(request.query_params)
    return await _respond(request, options, warnings, cache=None)


async def retrieve_thumbnail(request: Request) -> Response:
    config: DicomwebConfig = request.app.state.dicomweb
    options, warnings = _thumbnail_options(request.query_params)
    cache = ThumbnailCache(thumbnail_dir(config.data_dir))
    return await _respond(request, options, warnings, cache=cache)


async def _respond(
    request: Request, options: RenderOptions, warnings: list[str], cache: ThumbnailCache | None
) -> Response:
    archive: Archive = request.app.state.archive
    params = request.path_params
    accepted = accepted_types(request)
    study = path_uid(request, "study")
    series = path_uid(request, "series") if "series" in params else None
    instance = path_uid(request, "instance") if "instance" in params else None
    frames = parse_frame_list(params["frames"]) if "frames" in params else None
    found = await anyio.to_thread.run_sync(archive.find_instances, study, series, instance)
    stored = representative(found, study_level=series is None)
    kind = "thumbnail" if cache is not None else "rendered"
    digest = _digest(stored, frames, options, accepted, kind)
    headers = {"ETag": f'"{digest[:32]}"', "Cache-Control": CACHE_CONTROL}
    if headers["ETag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    key = stored.blob_key
    rendered = await anyio.to_thread.run_sync(cache.read, key, digest) if cache else None
    if rendered is None:
        frame_cache = request.app.state.dicomweb.data_dir / "cache" / "frames"
        rendered = await anyio.to_thread.run_sync(
            _render, archive, stored, accepted, frames, options, cache is not None, frame_cache
        )
        if cache is not None:
            await anyio.to_thread.run_sync(cache.write, key, digest, rendered)
    if messages := warnings + list(rendered.warnings):
        headers["Warning"] = warning_header(messages)
    return Response(rendered.content, media_type=rendered.media_type, headers=headers)


def _render(
    archive: Archive,
    stored: StoredInstance,
    accepted: list[str],
    frames: list[int] | None,
    options: RenderOptions,
    thumbnail: bool,
    frame_cache: Path,
) -> Rendered:
    return render_stored(
        archive.blobs,
        stored.blob_key,
        accepted,
        frames,
        options,
        images_only=thumbnail,
        frame_cache=frame_cache,
    )
