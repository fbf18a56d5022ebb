"""The bundled viewer's pages need a person: one who is not signed in goes to sign in and back.

Only a page load is sent away (a navigation to a path without a file extension, asking for
HTML); the viewer's scripts, styles and images are its own code and hold no patient data. A
viewer link carries its own study-limited token (`?token=`), so it opens as it is.
"""

from __future__ import annotations

import functools
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import Response

from portal.pages.session import PublicHandler, optional_visitor, sign_in_redirect


def _is_page_load(request: Request) -> bool:
    name = PurePosixPath(request.url.path).name
    navigating = request.headers.get("sec-fetch-mode") == "navigate"
    wants_html = "text/html" in request.headers.get("accept", "")
    return ("." not in name and (navigating or wants_html)) or name == "index.html"


def sign_in_first(endpoint: PublicHandler) -> PublicHandler:
    """Wraps the viewer's file endpoint (the composition root applies it)."""

    @functools.wraps(endpoint)
    async def viewer_page(request: Request) -> Response:
        if (
            _is_page_load(request)
            and "token" not in request.query_params
            and await optional_visitor(request) is None
        ):
            return sign_in_redirect(request)
        return await endpoint(request)

    return viewer_page
