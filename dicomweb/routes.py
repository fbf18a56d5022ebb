"""The DICOMweb resources under /dicom-web, one table (PS3.18 10.4-10.6).

Every endpoint here is either `guarded` (authenticated, decided, audited) or marked `public`;
tests/dicomweb/test_guard.py walks the assembled app and fails on any route that is neither.
"""

from __future__ import annotations

from starlette.routing import Route

from dicomweb import capabilities, pixels, qido, rendered, stow, wado
from dicomweb.guard import guarded, guarded_blocking, public
from policy.roles import Action

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

_search_studies = guarded_blocking(Action.SEARCH, qido.search_for_studies, qido.answer_search)
_search_series = guarded_blocking(Action.SEARCH, qido.search_for_series, qido.answer_search)
_search_instances = guarded_blocking(Action.SEARCH, qido.search_for_instances, qido.answer_search)
_store = guarded(Action.STORE, stow.store_instances)
_retrieve = guarded_blocking(Action.DOWNLOAD, wado.retrieve_instances, wado.answer_retrieval)
_metadata = guarded(Action.READ_METADATA, wado.retrieve_metadata)
_delete = guarded(Action.DELETE, wado.delete_instances)
_bulk = guarded(Action.READ_PIXELS, pixels.retrieve_bulk_data)
_frames = guarded(Action.READ_PIXELS, pixels.retrieve_frames)
_rendered = guarded(Action.READ_PIXELS, rendered.retrieve_rendered)
_thumbnail = guarded(Action.READ_PIXELS, rendered.retrieve_thumbnail)

_SERVICE_ROUTES = [
    Route("/studies", _search_studies, methods=["GET"]),
    Route("/studies", _store, methods=["POST"]),
    Route("/series", _search_series, methods=["GET"]),
    Route("/instances", _search_instances, methods=["GET"]),
    Route(STUDY, _retrieve, methods=["GET"]),
    Route(STUDY, _store, methods=["POST"]),
    Route(STUDY, _delete, methods=["DELETE"]),
    Route(STUDY + "/metadata", _metadata, methods=["GET"]),
    Route(STUDY + "/series", _search_series, methods=["GET"]),
    Route(STUDY + "/instances", _search_instances, methods=["GET"]),
    Route(SERIES, _retrieve, methods=["GET"]),
    Route(SERIES, _delete, methods=["DELETE"]),
    Route(SERIES + "/metadata", _metadata, methods=["GET"]),
    Route(SERIES + "/instances", _search_instances, methods=["GET"]),
    Route(INSTANCE, _retrieve, methods=["GET"]),
    Route(INSTANCE, _delete, methods=["DELETE"]),
    Route(INSTANCE + "/metadata", _metadata, methods=["GET"]),
    Route(INSTANCE + "/bulk/{path:path}", _bulk, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}", _frames, methods=["GET"]),
    Route(STUDY + "/rendered", _rendered, methods=["GET"]),
    Route(SERIES + "/rendered", _rendered, methods=["GET"]),
    Route(INSTANCE + "/rendered", _rendered, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/rendered", _rendered, methods=["GET"]),
    Route(STUDY + "/thumbnail", _thumbnail, methods=["GET"]),
    Route(SERIES + "/thumbnail", _thumbnail, methods=["GET"]),
    Route(INSTANCE + "/thumbnail", _thumbnail, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/thumbnail", _thumbnail, methods=["GET"]),
]


def _options_routes(routes: list[Route]) -> list[Route]:
    """OPTIONS on every resource: its capabilities and an `Allow` header (PS3.18 8.9)."""
    paths = dict.fromkeys(route.path for route in routes)
    return [
        Route(path, public(capabilities.resource_capabilities(path)), methods=["OPTIONS"])
        for path in paths
    ]


ROUTES = [
    Route("/", public(capabilities.retrieve_capabilities), methods=["GET", "OPTIONS"]),
    *_SERVICE_ROUTES,
    *_options_routes(_SERVICE_ROUTES),
]
