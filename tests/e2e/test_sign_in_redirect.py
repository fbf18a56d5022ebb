"""The sign-in page in a real Chromium: after signing in, the browser stays on Ferry's origin.

The attack: `/auth/login?next=/%09/evil.example/` used to make the page call
`location.assign("/\\t/evil.example/")`, which a browser reads as `//evil.example/`. The page
now receives only a path the server checked; the browser ends on this site whatever `next` says.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningServer
from tests.policy._people import PASSWORD, add_user

CHROMIUM = Path("/usr/bin/chromium")
EMAIL = "reader@ferry.test"


@pytest.fixture(scope="module")
def chromium(playwright_session: Any) -> Iterator[Any]:
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run"]
    browser = playwright_session.chromium.launch(executable_path=str(CHROMIUM), args=args)
    yield browser
    browser.close()


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def _sign_in_and_land(chromium: Any, server: RunningServer, query: str) -> str:
    """Signs in through the page at `/auth/login?<query>`; where the browser ends up."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        # Anything leaving Ferry's origin is recorded and stopped, never sent.
        left: list[str] = []

        def elsewhere(route: Any) -> None:
            left.append(route.request.url)
            route.abort()

        page.route(lambda url: not url.startswith(server.base_url), elsewhere)
        page.goto(f"{server.base_url}/auth/login?{query}")
        page.fill("input[name=email]", EMAIL)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation(wait_until="commit"):
            page.click("button[type=submit]")
        page.wait_for_load_state()
        assert left == []
        return page.url
    finally:
        context.close()


@pytest.mark.parametrize(
    "query",
    [
        "next=/%09/evil.example/",  # the reported attack
        "next=/%0a/evil.example/",
        "next=/%5Cevil.example/",
        "next=//evil.example/",
        "next=https://evil.example/",
        "next=javascript:alert(1)",
    ],
)
def test_signing_in_never_leaves_the_site(chromium, server: RunningServer, query: str) -> None:
    add_user(server.archive.engine, EMAIL)
    landed = urlsplit(_sign_in_and_land(chromium, server, query))
    assert f"{landed.scheme}://{landed.netloc}" == server.base_url
    # The front page, which sends a person of no institution yet to their own settings.
    assert landed.path == "/account/notifications"


def test_a_path_on_the_site_is_followed(chromium, server: RunningServer) -> None:
    add_user(server.archive.engine, EMAIL)
    landed = _sign_in_and_land(chromium, server, "next=/healthz%3Fafter%3Dsign-in")
    assert landed == f"{server.base_url}/healthz?after=sign-in"
