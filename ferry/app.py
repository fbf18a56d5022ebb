"""The composition root for HTTP: builds the archive and the Starlette app from Settings."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import anyio
from pydicom import config as pydicom_config
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from archive.blobstore import FilesystemBlobStore
from archive.store import Archive
from dicomweb import capabilities, viewer, wado_uri
from dicomweb._recent_views import RecentViews
from dicomweb.errors import EXCEPTION_HANDLERS
from dicomweb.guard import guarded, public
from dicomweb.routes import ROUTES
from dicomweb.thumbnails import thumbnail_dir
from dicomweb.urls import DICOMWEB_PREFIX
from dimse.context import BridgeContext
from dimse.forward import enqueue_forward
from dimse.receiving import spool_received_data_sets
from dimse.request_peers import BridgePacs
from dimse.wakeups import quicken_reactors
from ferry.database import check_database_writable, create_database_engine, migrate
from ferry.http_metrics import HttpMetrics
from ferry.metrics_routes import metrics_route
from ferry.settings import Settings, load_settings
from foundation import metrics
from foundation.clock import utc_now
from policy.authentication import Authenticator
from policy.store import snapshot
from portal import auth_routes
from portal.admin_api import api_mount
from portal.pages import routes as pages
from portal.pages.viewer_gate import sign_in_first

log = logging.getLogger(__name__)


def configure_libraries(settings: Settings) -> None:
    """Library globals, set in one place: read leniently, write strictly."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.RAISE
    spool_received_data_sets(settings.spool_dir)  # not the system's temporary folder
    metrics.configure(settings.metrics_folder())  # prometheus-client's multiprocess folder
    quicken_reactors()  # pynetdicom's polling loops wake when there is something to do
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(level=settings.log_level.upper())


def build_archive(settings: Settings) -> Archive:
    engine = create_database_engine(settings)
    migrate(engine)
    blobs = FilesystemBlobStore(settings.blob_dir, fsync=settings.blob_fsync)
    return Archive(
        engine,
        blobs,
        replace_duplicates=settings.replace_duplicates,
        min_free_bytes=settings.min_free_bytes,
        frame_cache_dir=settings.data_dir / "cache" / "frames",
        derived_dirs=(thumbnail_dir(settings.data_dir),),
    )


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "up"})


def _check_ready(archive: Archive) -> None:
    """The database takes a write, the blob store takes a write, free space is above the reserve."""
    check_database_writable(archive.engine)
    archive.blobs.check()
    archive.check_free_space()


async def readyz(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    try:
        await anyio.to_thread.run_sync(_check_ready, archive)
    except Exception as error:
        log.warning("not ready: %s", error)
        return JSONResponse({"status": "not ready", "reason": type(error).__name__}, 503)
    return JSONResponse({"status": "ready"})


def _middleware(settings: Settings) -> list[Middleware]:
    counted = [Middleware(HttpMetrics)]  # outermost: it sees every answer, CORS refusals too
    if not settings.cors_origins:
        return counted
    return [
        *counted,
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["accept", "authorization", "content-type", "if-none-match"],
            expose_headers=["Warning", "ETag", "Content-Length", "Content-Location"],
            allow_credentials=True,
            max_age=3600,
        ),
    ]


def _viewer_routes() -> list[BaseRoute]:
    """The viewer's pages send a person who is not signed in to sign in first, then back."""
    routes: list[BaseRoute] = []
    for route in viewer.ROUTES:
        if isinstance(route, Route) and route.endpoint is viewer.serve_viewer_file:
            route = Route(route.path, sign_in_first(route.endpoint), methods=["GET"])
        routes.append(route)
    return routes


_wado_uri = guarded(
    wado_uri.wado_uri_action, wado_uri.retrieve_wado_uri, study_from=wado_uri.wado_uri_study
)


def create_app(settings: Settings, archive: Archive | None = None) -> Starlette:
    configure_libraries(settings)
    archive = archive or build_archive(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        archive.engine.dispose()

    app = Starlette(
        routes=[
            Route("/healthz", public(healthz)),
            Route("/readyz", public(readyz)),
            Route(
                DICOMWEB_PREFIX,
                public(capabilities.retrieve_capabilities),
                methods=["GET", "OPTIONS"],
            ),
            Mount(DICOMWEB_PREFIX, routes=ROUTES),
            *_viewer_routes(),
            Route("/wado", _wado_uri, methods=["GET"]),
            *auth_routes.ROUTES,
            api_mount(),
            *pages.ROUTES,
            metrics_route(settings, archive),
        ],
        middleware=_middleware(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.dicomweb = settings.dicomweb()
    app.state.portal = settings.portal()
    app.state.archive = archive
    app.state.authenticator = Authenticator.open(settings.auth(), archive.engine)
    app.state.policy_snapshot = functools.partial(snapshot, archive.engine)
    app.state.recent_views = RecentViews()
    app.state.clock = utc_now  # tests replace it to decide "now" (core hours, holidays)
    app.state.enqueue_forward = functools.partial(
        enqueue_forward, max_attempts=settings.forward_max_attempts
    )
    # requests and node transfers: C-FIND, C-ECHO, fetch (its job's runs)
    app.state.remote_pacs = BridgePacs(BridgeContext(settings.dimse(), archive))
    app.state.fetch_max_attempts = settings.fetch_max_attempts
    return app


def create_app_from_env() -> Starlette:
    """For `uvicorn --factory ferry.app:create_app_from_env`."""
    return create_app(load_settings())
