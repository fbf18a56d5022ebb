"""The DICOMweb resources under /dicom-web, one table (PS3.18 10.4-10.6)."""

from __future__ import annotations

from starlette.routing import Route

from dicomweb import capabilities, pixels, qido, rendered, stow, wado

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

ROUTES = [
    Route("/", capabilities.retrieve_capabilities, methods=["GET", "OPTIONS"]),
    Route("/studies", qido.search_for_studies, methods=["GET"]),
    Route("/studies", stow.store_instances, methods=["POST"]),
    Route("/series", qido.search_for_series, methods=["GET"]),
    Route("/instances", qido.search_for_instances, methods=["GET"]),
    Route(STUDY, wado.retrieve_instances, methods=["GET"]),
    Route(STUDY, stow.store_instances, methods=["POST"]),
    Route(STUDY, wado.delete_instances, methods=["DELETE"]),
    Route(STUDY + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(STUDY + "/series", qido.search_for_series, methods=["GET"]),
    Route(STUDY + "/instances", qido.search_for_instances, methods=["GET"]),
    Route(SERIES, wado.retrieve_instances, methods=["GET"]),
    Route(SERIES, wado.delete_instances, methods=["DELETE"]),
    Route(SERIES + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(SERIES + "/instances", qido.search_for_instances, methods=["GET"]),
    Route(INSTANCE, wado.retrieve_instances, methods=["GET"]),
    Route(INSTANCE, wado.delete_instances, methods=["DELETE"]),
    Route(INSTANCE + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(INSTANCE + "/bulk/{path:path}", pixels.retrieve_bulk_data, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}", pixels.retrieve_frames, methods=["GET"]),
    Route(STUDY + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(SERIES + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(INSTANCE + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(STUDY + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(SERIES + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(INSTANCE + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
]
