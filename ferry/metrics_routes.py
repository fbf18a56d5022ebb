"""`/metrics` for Prometheus: behind a bearer token, or on a separate loopback port.

Nothing is served unprotected by default. With `FERRY_METRICS_TOKEN` set, `GET /metrics` on the
HTTP port answers a request carrying `Authorization: Bearer <token>`; without the header, or
with any other token (a user's access token included), it answers 401. Without the setting it
answers 404, as for any path Ferry does not serve. With `FERRY_METRICS_PORT` set, a listener
on 127.0.0.1 of that port serves the same metrics to whoever can reach the loopback interface.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import Any

import anyio
from prometheus_client import start_http_server
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from archive.store import Archive
from audit.shipping import ShippingCollector
from ferry.settings import Settings
from foundation import metrics
from foundation.metric_collectors import DiskSpaceCollector, JobQueueCollector

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ferry-metrics"'}


def collectors(settings: Settings, archive: Archive) -> list[Collector]:
    """What is read at scrape time: the job queue, free space, the audit shipping backlog."""
    found: list[Collector] = [
        JobQueueCollector(archive.engine),
        DiskSpaceCollector(settings.data_dir, settings.min_free_bytes),
    ]
    if settings.atna_url:
        found.append(ShippingCollector(archive.engine))
    return found


def metrics_route(settings: Settings, archive: Archive) -> Route:
    """`GET /metrics` on the main HTTP port (404 unless FERRY_METRICS_TOKEN is set)."""
    token = settings.metrics_token.encode()
    scraped = collectors(settings, archive)

    async def serve_metrics(request: Request) -> Response:
        if not token:
            return PlainTextResponse("Not Found", status_code=404)
        if not _bearer_matches(request.headers.get("authorization", ""), token):
            return PlainTextResponse("a metrics token is required", 401, headers=CHALLENGE)
        body = await anyio.to_thread.run_sync(metrics.exposition, scraped)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return Route(METRICS_PATH, serve_metrics, methods=["GET"])


def _bearer_matches(header: str, token: bytes) -> bool:
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), token)


class MetricsListener:
    """FERRY_METRICS_PORT: the metrics on 127.0.0.1 only, in a thread of `ferry serve`."""

    def __init__(self, port: int, scraped: Sequence[Collector]) -> None:
        self.port = port
        self.scraped = scraped
        self._server: Any = None

    def start(self) -> None:
        registry = metrics.registry(self.scraped)
        self._server, _thread = start_http_server(self.port, addr="127.0.0.1", registry=registry)
        log.info("metrics on http://127.0.0.1:%s%s", self.port, METRICS_PATH)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
