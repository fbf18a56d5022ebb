"""HTTP metrics: every request counted and timed by its route template, never its raw path.

The template is the path pattern Starlette matched (`/dicom-web/studies/{study}/series`), so
UIDs, patient identifiers and other values in paths never become label values; a request no
route matched counts as `unmatched`, and unusual methods as `OTHER`.
"""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foundation import metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class HttpMetrics:
    """ASGI middleware: status and duration of each HTTP request, by method and route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            seconds = time.perf_counter() - started
            metrics.record_http(method, route_template(scope), status, seconds)


def route_template(scope: Scope) -> str:
    """The matched route's path pattern, with the (constant) paths of the mounts around it."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if route is None or path is None or isinstance(route, Mount):
        return UNMATCHED  # nothing matched, or nothing inside a mount did
    mounted = str(scope.get("root_path", ""))[len(str(scope.get("app_root_path", ""))) :]
    return f"{mounted}{path}" or "/"
